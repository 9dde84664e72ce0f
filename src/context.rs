//! The guest image's build context: what `docker build` would send, and sending it.
//!
//! This module owns the context from folder to engine:
//!
//! - [`scan`] lists every path the docker CLI would send for a folder, honouring its
//!   `.dockerignore` exactly as the CLI does for the classic builder (`context/ignore.rs`),
//!   with each folder (so empty ones count), file (content digest and executable bit) and
//!   symlink (its target, never followed). Its map is what the build hash records.
//! - [`tar_stream`] sends exactly that map as a tar stream, produced on a blocking thread and
//!   handed over a few 64 KiB chunks at a time, so memory stays flat whatever the file sizes.
//!   Each file is digested as it is streamed; one that no longer matches the map ends the
//!   stream with [`ContextError::Changed`], so the build fails instead of producing an image
//!   its hash does not describe. The Dockerfile is placed as the CLI places it.
//!
//! What differs from the CLI's tarball, on purpose: headers carry mtime 0, owner 0:0 and mode
//! 0755 (folders, executable files), 0644 (other files) or 0777 (symlinks), whatever the
//! folder holds, so the same inputs give the same bytes; hard links are sent as separate
//! files; and a socket, fifo or device is refused rather than sent.
//!
//! [`dockerfile`] reads the Dockerfile itself for what the hash and the build must know: the
//! images and URLs it cannot pin, and its `RUN` steps.

pub mod dockerfile;
mod ignore;
mod stream;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use stream::{ContextStream, DockerfileRef, tar_stream};

use crate::digest::{InputDigest, file_digest};
use ignore::Patterns;

/// The name docker reads patterns from, at the top of the context.
pub const DOCKERIGNORE: &str = ".dockerignore";

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read {path}; check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a socket, fifo or device, which a build context cannot hold; remove it or list it in .dockerignore"
    )]
    Special { path: PathBuf },
    #[error(
        "{path} has a name or link target that is not valid UTF-8; rename it or list it in .dockerignore"
    )]
    NotUtf8 { path: PathBuf },
    #[error(
        "{path} is not a regular file; docker reads .dockerignore as one, so replace it by the file it stands for"
    )]
    IgnoreNotFile { path: PathBuf },
    #[error("{path}:{line}: bad pattern {pattern:?}: {reason}; fix or remove the line")]
    BadPattern {
        path: PathBuf,
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("input {path} changed after it was hashed; run the build again")]
    Changed { path: PathBuf },
    #[error("cannot add {path} to the build context; rename it or list it in .dockerignore")]
    Tar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The reader of the stream went away before the end: the engine closed the connection,
    /// and its own error says why.
    #[error("the build context was not sent whole: the engine stopped reading it")]
    Abandoned,
}

/// Every path of `context_dir` that `docker build` would send, relative, `/`-separated and
/// sorted. A folder that the walk enters only because an exception names something below it is
/// not sent by docker itself, but the engine creates it (mode 0755) to hold what is: it is
/// listed here as a folder too, which comes to the same image.
pub fn scan(context_dir: &Path) -> Result<BTreeMap<String, InputDigest>, ContextError> {
    let patterns = read_dockerignore(context_dir)?;
    let mut walk = Walk {
        patterns,
        entries: BTreeMap::new(),
    };
    walk.dir(context_dir, "", false, None)?;
    let mut entries = walk.entries;
    let missing: Vec<String> = entries
        .keys()
        .flat_map(|k| k.match_indices('/').map(|(i, _)| k[..i].to_string()))
        .filter(|parent| !entries.contains_key(parent))
        .collect();
    for parent in missing {
        entries.insert(parent, InputDigest::Dir);
    }
    Ok(entries)
}

/// The patterns of `context_dir/.dockerignore`; none when there is no such file.
fn read_dockerignore(context_dir: &Path) -> Result<Patterns, ContextError> {
    let path = context_dir.join(DOCKERIGNORE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Patterns::default()),
        Err(source) => return Err(ContextError::Read { path, source }),
        Ok(meta) if !meta.is_file() => return Err(ContextError::IgnoreNotFile { path }),
        Ok(_) => {}
    }
    let bytes = std::fs::read(&path).map_err(|source| ContextError::Read {
        path: path.clone(),
        source,
    })?;
    Patterns::parse(&String::from_utf8_lossy(&bytes)).map_err(|bad| ContextError::BadPattern {
        path,
        line: bad.line,
        pattern: bad.pattern,
        reason: bad.reason,
    })
}

struct Walk {
    patterns: Patterns,
    entries: BTreeMap<String, InputDigest>,
}

impl Walk {
    /// The children of `dir` (whose relative path is `rel`), as docker's walk sees them.
    /// `lossy`: some folder above has a name that is not UTF-8. `parent`: which patterns
    /// matched `dir` (`None` at the top).
    fn dir(
        &mut self,
        dir: &Path,
        rel: &str,
        lossy: bool,
        parent: Option<&[bool]>,
    ) -> Result<(), ContextError> {
        let read = |source| ContextError::Read {
            path: dir.to_path_buf(),
            source,
        };
        for ent in std::fs::read_dir(dir).map_err(read)? {
            let ent = ent.map_err(read)?;
            let os_name = ent.file_name();
            let name = os_name.to_string_lossy();
            let lossy = lossy || os_name.to_str().is_none();
            let child_rel = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let path = ent.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|source| ContextError::Read {
                path: path.clone(),
                source,
            })?;
            let (excluded, matched) = if self.patterns.is_empty() {
                (false, Vec::new())
            } else {
                self.patterns.matches(&child_rel, parent)
            };
            if excluded {
                if meta.is_dir() && self.patterns.walk_into(&child_rel) {
                    self.dir(&path, &child_rel, lossy, Some(&matched))?;
                }
                continue;
            }
            if lossy {
                return Err(ContextError::NotUtf8 { path });
            }
            self.entries
                .insert(child_rel.clone(), entry_digest(&path, &meta)?);
            if meta.is_dir() {
                self.dir(&path, &child_rel, lossy, Some(&matched))?;
            }
        }
        Ok(())
    }
}

/// What one kept path is: a folder, a file's digest and executable bit, a symlink's target.
fn entry_digest(path: &Path, meta: &std::fs::Metadata) -> Result<InputDigest, ContextError> {
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(InputDigest::Dir);
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| ContextError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let target = target.to_str().ok_or_else(|| ContextError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        return Ok(InputDigest::Symlink {
            target: target.to_string(),
        });
    }
    if !ft.is_file() {
        return Err(ContextError::Special {
            path: path.to_path_buf(),
        });
    }
    let (digest, _) = file_digest(path).map_err(|source| ContextError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(InputDigest::File {
        digest,
        executable: is_executable(meta),
    })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str, mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn keys(m: &BTreeMap<String, InputDigest>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn scan_lists_folders_files_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
        write(root, "bin/tool", "#!/bin/sh\n", 0o755);
        write(root, "a.txt", "a", 0o644);
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside/nowhere", root.join("dangling")).unwrap();
        let m = scan(root).unwrap();
        assert_eq!(
            keys(&m),
            [
                "a.txt",
                "bin",
                "bin/tool",
                "dangling",
                "empty",
                "empty/nested-empty",
                "link"
            ]
        );
        assert_eq!(m["empty/nested-empty"], InputDigest::Dir);
        assert_eq!(
            m["a.txt"],
            InputDigest::File {
                digest: Digest::of(b"a"),
                executable: false
            }
        );
        assert_eq!(
            m["bin/tool"],
            InputDigest::File {
                digest: Digest::of(b"#!/bin/sh\n"),
                executable: true
            }
        );
        assert_eq!(
            m["link"],
            InputDigest::Symlink {
                target: "a.txt".into()
            }
        );
        assert_eq!(
            m["dangling"],
            InputDigest::Symlink {
                target: "../outside/nowhere".into()
            }
        );
    }

    #[test]
    fn scan_honours_dockerignore_like_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "keep.md",
            "README.md",
            "x.md",
            "build/keep.txt",
            "build/junk",
        ] {
            write(root, f, f, 0o644);
        }
        for f in [
            "logs/keep",
            "cache/deep/a",
            "src/a.go",
            "src/sub/b.go",
            "src/c.rs",
        ] {
            write(root, f, f, 0o644);
        }
        fs::create_dir_all(root.join("build/empty")).unwrap();
        let ignore = "*.md\n!README.md\nbuild\n!build/keep.txt\ncache/\nlogs\n!**/keep\n**/*.go\n.dockerignore\n";
        write(root, ".dockerignore", ignore, 0o644);
        let m = scan(root).unwrap();
        // `build` is entered for its exception, and listed as the folder the engine makes;
        // `logs/keep` stays out: docker does not open `logs` for `!**/keep`.
        assert_eq!(
            keys(&m),
            [
                "README.md",
                "build",
                "build/keep.txt",
                "src",
                "src/c.rs",
                "src/sub"
            ]
        );
    }

    #[test]
    fn scan_refuses_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(&err, ContextError::Special { path } if *path == sock));
        assert!(
            err.to_string().contains("list it in .dockerignore"),
            "{err}"
        );
        write(dir.path(), ".dockerignore", "*.sock\n", 0o644);
        assert_eq!(keys(&scan(dir.path()).unwrap()), [".dockerignore"]);
    }

    #[test]
    fn scan_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".dockerignore", "# fine\nok\n[\n", 0o644);
        let err = scan(dir.path()).unwrap_err();
        assert!(
            matches!(&err, ContextError::BadPattern { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(".dockerignore:3:"), "{err}");
    }

    #[test]
    fn scan_refuses_names_that_are_not_utf8_unless_excluded() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"bad-\xff.txt");
        fs::write(dir.path().join(name), "x").unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(err, ContextError::NotUtf8 { .. }), "{err:?}");
        // Matched as docker matches it: the bad byte stands for one character.
        write(dir.path(), ".dockerignore", "bad-?.txt\n", 0o644);
        assert_eq!(keys(&scan(dir.path()).unwrap()), [".dockerignore"]);
    }

    #[test]
    fn scan_refuses_a_linked_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "patterns", "x\n", 0o644);
        std::os::unix::fs::symlink("patterns", dir.path().join(DOCKERIGNORE)).unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(err, ContextError::IgnoreNotFile { .. }), "{err:?}");
    }
}
