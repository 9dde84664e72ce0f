//! Caches named by URL: `file:///path`, `http://host[:port]/prefix` (and `https://`), and
//! `s3://bucket/prefix`.

use std::fmt;
use std::path::PathBuf;

/// A cache's address, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUrl {
    /// A folder on this machine (or a shared disk).
    File(PathBuf),
    /// A plain HTTP server that answers GET and HEAD and accepts PUT and DELETE (nginx with
    /// WebDAV); `base` ends without a `/`.
    Http { base: String },
    /// An S3 bucket (AWS, Garage, MinIO, R2); `prefix` without leading or trailing `/`.
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cache URL {url:?}: {problem}; a cache is file:///ABSOLUTE/PATH, http(s)://HOST[:PORT]/PREFIX or s3://BUCKET/PREFIX"
)]
pub struct UrlError {
    pub url: String,
    pub problem: String,
}

impl CacheUrl {
    pub fn parse(url: &str) -> Result<CacheUrl, UrlError> {
        let bad = |problem: &str| UrlError {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("it has no scheme"));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("a file URL names an absolute path (three slashes)"));
                }
                let path = PathBuf::from(rest);
                if path.components().any(|c| c.as_os_str() == "..") {
                    return Err(bad("the path may not hold '..'"));
                }
                Ok(CacheUrl::File(path))
            }
            "http" | "https" => {
                let host = rest.split('/').next().unwrap_or_default();
                if host.is_empty() || host.contains('@') {
                    return Err(bad(
                        "it names no host (or holds credentials, which belong in the environment)",
                    ));
                }
                if rest.contains(['?', '#']) {
                    return Err(bad("a query or fragment has no meaning here"));
                }
                Ok(CacheUrl::Http {
                    base: url.trim_end_matches('/').to_string(),
                })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    });
                if !ok {
                    return Err(bad(
                        "the bucket name must be 3-63 lowercase letters, digits, '-' or '.'",
                    ));
                }
                Ok(CacheUrl::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
            other => Err(bad(&format!(
                "the scheme {other:?} is not one bottle knows"
            ))),
        }
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheUrl::File(p) => write!(f, "file://{}", p.display()),
            CacheUrl::Http { base } => f.write_str(base),
            CacheUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            CacheUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            CacheUrl::parse("file:///srv/c").unwrap(),
            CacheUrl::File("/srv/c".into())
        );
        assert_eq!(
            CacheUrl::parse("http://127.0.0.1:8080/c/").unwrap(),
            CacheUrl::Http {
                base: "http://127.0.0.1:8080/c".into()
            }
        );
        assert_eq!(
            CacheUrl::parse("s3://my-bucket/a/b/").unwrap(),
            CacheUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        for bad in [
            "/srv/c",
            "file://rel",
            "ftp://x/y",
            "http:///p",
            "s3://A_B",
            "http://u:p@h/",
        ] {
            let e = CacheUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
