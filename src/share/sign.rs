//! Signing entries: ed25519 keys written as Nix writes them, and the byte string a signature
//! covers.
//!
//! Keys are one line `NAME:BASE64`: a secret key holds 64 bytes (the seed, then the public
//! key, libsodium's layout, as `nix-store --generate-binary-cache-key` writes it), a public key
//! 32. A signature is `NAME:BASE64` of 64 bytes, NAME naming the key that made it.
//!
//! A signature covers [`fingerprint`]: the entry's hash, blake3 of its manifest's bytes and,
//! per component, its hash and blake3 of its `record.json` bytes. The manifest names the
//! components by the hash of their keys (every spec field: user, env, mounts, daemons), and
//! each record lists every file with its blake3, so a signature covers every field and every
//! artifact byte of the entry. ed25519 through `ring`, which rustls already brings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentId};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{origin}: not a {what} (one line NAME:BASE64, as `bottle key generate NAME` writes it): {problem}"
    )]
    Malformed {
        origin: String,
        what: &'static str,
        problem: String,
    },
    #[error("key name {name:?} must be non-empty letters, digits, '.', '-' or '_'")]
    BadName { name: String },
}

/// The name of a key: what signatures and `trusted-public-keys` say.
fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName {
            name: name.to_string(),
        })
    }
}

/// `NAME:BASE64` of `len` bytes.
fn split(
    line: &str,
    len: usize,
    origin: &str,
    what: &'static str,
) -> Result<(String, Vec<u8>), KeyError> {
    let bad = |problem: String| KeyError::Malformed {
        origin: origin.to_string(),
        what,
        problem,
    };
    let line = line.trim();
    let (name, b64) = line
        .split_once(':')
        .ok_or_else(|| bad("no ':' between the name and the key".to_string()))?;
    check_name(name).map_err(|e| bad(e.to_string()))?;
    let bytes = B64
        .decode(b64)
        .map_err(|e| bad(format!("the part after ':' is not base64: {e}")))?;
    if bytes.len() != len {
        return Err(bad(format!("{} bytes where {len} belong", bytes.len())));
    }
    Ok((name.to_string(), bytes))
}

/// A secret key: signs pushes (`--sign-key`, `secret-key-file`).
pub struct SecretKey {
    name: String,
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    /// A fresh key named `name`, from the system's randomness.
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .expect("the system's randomness is available");
        Ok(SecretKey::from_seed(name, seed))
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> SecretKey {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
        SecretKey {
            name: name.to_string(),
            pair,
            seed,
        }
    }

    /// Parses the one line of a secret key file; `origin` names it in errors.
    pub fn parse(line: &str, origin: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = split(line, 64, origin, "secret key")?;
        let seed: [u8; 32] = bytes[..32].try_into().expect("64 bytes");
        let key = SecretKey::from_seed(&name, seed);
        if key.pair.public_key().as_ref() != &bytes[32..] {
            return Err(KeyError::Malformed {
                origin: origin.to_string(),
                what: "secret key",
                problem: "its second half is not the public key of its first".to_string(),
            });
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret key file's line: `NAME:BASE64(seed ‖ public key)`.
    pub fn to_line(&self) -> String {
        let mut bytes = self.seed.to_vec();
        bytes.extend_from_slice(self.pair.public_key().as_ref());
        format!("{}:{}", self.name, B64.encode(bytes))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            bytes: self
                .pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("32 bytes"),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key: self.name.clone(),
            bytes: self
                .pair
                .sign(message)
                .as_ref()
                .try_into()
                .expect("64 bytes"),
        }
    }
}

/// A public key: what `--trust` and `trusted-public-keys` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    bytes: [u8; 32],
}

impl PublicKey {
    pub fn parse(line: &str, origin: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split(line, 32, origin, "public key")?;
        Ok(PublicKey {
            name,
            bytes: bytes.try_into().expect("32 bytes"),
        })
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.bytes))
    }
    /// Whether `sig` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &Signature) -> bool {
        sig.key == self.name
            && UnparsedPublicKey::new(&ED25519, &self.bytes)
                .verify(message, &sig.bytes)
                .is_ok()
    }
}

/// A signature of an entry, by the key named `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn parse(line: &str, origin: &str) -> Result<Signature, KeyError> {
        let (key, bytes) = split(line, 64, origin, "signature")?;
        Ok(Signature {
            key,
            bytes: bytes.try_into().expect("64 bytes"),
        })
    }
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.key, B64.encode(self.bytes))
    }
}

/// The signatures file of an entry: one signature per line.
pub fn parse_signatures(text: &str, origin: &str) -> Result<Vec<Signature>, KeyError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Signature::parse(l, origin))
        .collect()
}

/// The byte string a signature of an entry covers: its hash, its manifest's bytes (by
/// blake3) and each component's hash and record bytes (by blake3), in the manifest's order.
pub fn fingerprint(
    entry: &BuildHash,
    manifest: &[u8],
    records: &[(ComponentId, &[u8])],
) -> Vec<u8> {
    let mut s = format!(
        "bottle-entry-signature-v1\nentry {entry}\nmanifest {}\n",
        Digest::of(manifest)
    );
    for (id, bytes) in records {
        s.push_str(&format!("{} {} {}\n", id.kind, id.hash, Digest::of(bytes)));
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_lines_and_sign() {
        let k = SecretKey::generate("ci-1").unwrap();
        let back = SecretKey::parse(&k.to_line(), "k.sec").unwrap();
        assert_eq!(back.public(), k.public());
        let p = PublicKey::parse(&k.public().to_line(), "k.pub").unwrap();
        let sig = back.sign(b"hello");
        let sig = Signature::parse(&sig.to_line(), "sig").unwrap();
        assert!(p.verifies(b"hello", &sig));
        assert!(!p.verifies(b"hellO", &sig));
        // Another key of the same name does not verify it.
        let other = SecretKey::generate("ci-1").unwrap().public();
        assert!(!other.verifies(b"hello", &sig));
    }

    #[test]
    fn malformed_keys_are_refused_naming_the_input() {
        let k = SecretKey::generate("a").unwrap();
        let e = PublicKey::parse(&k.to_line(), "trusted-public-keys").unwrap_err();
        assert!(e.to_string().contains("trusted-public-keys"), "{e}");
        assert!(e.to_string().contains("64 bytes where 32"), "{e}");
        assert!(PublicKey::parse("nocolon", "x").is_err());
        assert!(PublicKey::parse("a b:AAAA", "x").is_err());
        assert!(SecretKey::parse("a:!!", "x").is_err());
        // A secret key whose halves do not belong together.
        let mut bytes = k.seed.to_vec();
        bytes.extend_from_slice(&SecretKey::generate("a").unwrap().public().bytes);
        let e = SecretKey::parse(&format!("a:{}", B64.encode(bytes)), "x").unwrap_err();
        assert!(e.to_string().contains("not the public key"), "{e}");
        assert!(SecretKey::generate("a:b").is_err());
    }
}
