//! Sharing settings, under Nix's names: `substituters` (caches `bottle build` and `bottle
//! run` pull from before building or failing), `trusted-public-keys` (whose signatures a pull
//! accepts) and `secret-key-file` (what a push signs with).
//!
//! Read from `--config FILE` (or `BOTTLE_CONFIG`), else `$XDG_CONFIG_HOME/bottle/config.toml`,
//! else `~/.config/bottle/config.toml` (a missing default file is no error); then the
//! environment, for CI: `BOTTLE_SUBSTITUTERS` and `BOTTLE_TRUSTED_PUBLIC_KEYS`
//! (space-separated) replace the file's lists, `BOTTLE_SECRET_KEY_FILE` its key file.
//!
//! ```toml
//! substituters = ["s3://bottles/ci", "http://cache.internal:8080/bottles"]
//! trusted-public-keys = ["ci-1:x5d2…"]
//! secret-key-file = "/etc/bottle/ci-1.sec"
//! s3-endpoint = "http://127.0.0.1:3900"   # an S3 server other than AWS (AWS_ENDPOINT_URL wins)
//! s3-region = "garage"                    # (AWS_REGION wins)
//! ```
//!
//! S3 credentials are never read from this file: they come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), as every AWS tool reads them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::sign::PublicKey;
use super::url::CacheUrl;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    substituters: Vec<String>,
    #[serde(default)]
    trusted_public_keys: Vec<String>,
    secret_key_file: Option<PathBuf>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
}

/// The settings, checked: URLs parsed, keys decoded.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub substituters: Vec<CacheUrl>,
    pub trusted_public_keys: Vec<PublicKey>,
    pub secret_key_file: Option<PathBuf>,
    /// For `s3://` caches: the server (beside AWS) and region, where the environment's
    /// `AWS_ENDPOINT_URL` and `AWS_REGION` say nothing.
    pub s3: S3Options,
}

/// Where an `s3://` cache's server is, when the environment does not say.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// The default config file, if a home is known.
pub fn default_path() -> Option<PathBuf> {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    abs(std::env::var_os("XDG_CONFIG_HOME"))
        .or_else(|| abs(std::env::var_os("HOME")).map(|h| h.join(".config")))
        .map(|d| d.join("bottle").join("config.toml"))
}

impl Settings {
    /// Loads the settings from `explicit` (which must exist) or the default file, then the
    /// environment. Every error names the file or variable and the fix.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Settings> {
        use anyhow::Context;
        let file = match explicit {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the config file {}", p.display()))?;
                parse(&text, p)?
            }
            None => match default_path() {
                Some(p) if p.is_file() => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read the config file {}", p.display()))?;
                    parse(&text, &p)?
                }
                _ => (File::default(), String::new()),
            },
        };
        let (file, origin) = file;
        let env_list = |name: &str| -> Option<Vec<String>> {
            std::env::var(name)
                .ok()
                .map(|v| v.split_whitespace().map(str::to_string).collect())
        };
        let (subs, subs_origin) = match env_list("BOTTLE_SUBSTITUTERS") {
            Some(v) => (v, "BOTTLE_SUBSTITUTERS".to_string()),
            None => (file.substituters, format!("{origin}: substituters")),
        };
        let (keys, keys_origin) = match env_list("BOTTLE_TRUSTED_PUBLIC_KEYS") {
            Some(v) => (v, "BOTTLE_TRUSTED_PUBLIC_KEYS".to_string()),
            None => (
                file.trusted_public_keys,
                format!("{origin}: trusted-public-keys"),
            ),
        };
        let substituters = subs
            .iter()
            .map(|u| CacheUrl::parse(u).with_context(|| subs_origin.clone()))
            .collect::<anyhow::Result<_>>()?;
        let trusted_public_keys = keys
            .iter()
            .map(|k| PublicKey::parse(k, &keys_origin))
            .collect::<Result<_, _>>()?;
        let secret_key_file = std::env::var_os("BOTTLE_SECRET_KEY_FILE")
            .map(PathBuf::from)
            .or(file.secret_key_file);
        Ok(Settings {
            substituters,
            trusted_public_keys,
            secret_key_file,
            s3: S3Options {
                endpoint: file.s3_endpoint,
                region: file.s3_region,
            },
        })
    }
}

fn parse(text: &str, path: &Path) -> anyhow::Result<(File, String)> {
    let f: File = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "config file {}: {}; its keys are substituters, trusted-public-keys, secret-key-file, s3-endpoint and s3-region",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    Ok((f, path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        let e = parse("substitutors = []\n", Path::new("/x/config.toml")).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("/x/config.toml"), "{text}");
        assert!(text.contains("substitutors"), "{text}");
        let (f, _) = parse(
            "substituters = [\"file:///c\"]\nsecret-key-file = \"/k.sec\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(f.substituters, ["file:///c"]);
        assert_eq!(f.secret_key_file, Some(PathBuf::from("/k.sec")));
    }
}
