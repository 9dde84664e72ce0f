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

/// Runs `cmd` with `args` to its end: its output and its peak resident memory in KiB (the
/// child's own `ru_maxrss`, from `wait4`, which also reaps it).
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
#[allow(clippy::zombie_processes)]
#[allow(unsafe_code)] // wait4(2) for the child's rusage
pub fn output_with_peak_rss(
    mut cmd: std::process::Command,
    args: &[&str],
) -> (std::process::Output, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bottle");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on the pid of the child just spawned, which
    // nothing else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, usage.ru_maxrss as u64)
}

/// `cp -a FROM TO`.
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
pub fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The first chunk of the first file of a component of an entry in a cache folder: its key
/// and listed size.
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
pub fn first_chunk(
    cache: &Path,
    m: &bottle::manifest::Manifest,
    kind: bottle::hash::ComponentKind,
) -> (String, u64) {
    let id = m.components.get(kind);
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache.join(bottle::share::chunk_list_key(&id))).unwrap(),
    )
    .unwrap();
    let c = &list["files"][0]["chunks"][0];
    let d = bottle::digest::Digest::parse(c["blake3"].as_str().unwrap()).unwrap();
    (bottle::share::chunk_key(&d), c["size"].as_u64().unwrap())
}

/// Replaces an object of a cache folder with a sparse file of `len` zero bytes.
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
pub fn plant_sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

/// A cache server of a share test: a folder, nginx or Garage. The same test body runs over
/// each, as a separate `#[test]` per backend so a failure names it.
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
pub enum Remote {
    Folder(tempfile::TempDir),
    Nginx(super::nginx::Nginx),
    Garage(super::garage::Garage),
}

#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
impl Remote {
    pub fn folder() -> Remote {
        Remote::Folder(tempfile::tempdir().unwrap())
    }
    pub fn nginx() -> Remote {
        Remote::Nginx(super::nginx::Nginx::start())
    }
    pub fn garage() -> Remote {
        Remote::Garage(super::garage::Garage::start(1))
    }

    /// The cache at `prefix` (`team/cache`) under the server's root.
    pub fn url(&self, prefix: &str) -> String {
        match self {
            Remote::Folder(d) => url(&d.path().join(prefix)),
            Remote::Nginx(n) => n.url(prefix),
            Remote::Garage(_) => format!("s3://{}/{prefix}", super::garage::BUCKET),
        }
    }

    /// `bottle` for `ctx`, with the server's environment (S3 credentials and endpoint).
    pub fn cmd(&self, ctx: &TestContext) -> std::process::Command {
        match self {
            Remote::Garage(g) => g.cmd(ctx, 0),
            _ => ctx.cmd(),
        }
    }

    /// The folder a folder cache or nginx holds its objects in.
    fn root(&self) -> Option<PathBuf> {
        match self {
            Remote::Folder(d) => Some(d.path().to_path_buf()),
            Remote::Nginx(n) => Some(n.root()),
            Remote::Garage(_) => None,
        }
    }

    /// Writes an object at `key` (from the server's root), as the server stores it: a file,
    /// or through the S3 API; bottle is not involved.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        match (self, self.root()) {
            (Remote::Garage(g), _) => g.put(key, bytes),
            (_, Some(root)) => {
                let p = root.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
            _ => unreachable!(),
        }
    }

    /// Every object on the server, by key from its root, with its bytes.
    pub fn objects(&self) -> Vec<(String, Vec<u8>)> {
        match (self, self.root()) {
            (Remote::Garage(g), _) => g.objects(),
            (_, Some(root)) => files(&root),
            _ => unreachable!(),
        }
    }
}
