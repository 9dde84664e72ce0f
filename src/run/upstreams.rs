//! The run's local git-gate upstreams (`path = "~/src/project"`): each checked before the run
//! creates anything ([`check`]), then served to the bundle while the run lives ([`serve`]) on
//! a unix socket of its own in the run's folder (`runs/RUNID/git-gate/NAME`), which only the
//! bundle mounts. The repository itself is mounted nowhere: the guest cannot see it, and the
//! bundle reaches it through its socket only. The protocol is
//! [`crate::bundle::git_gate::local`]'s.
//!
//! A connection asks for one service (anything else is refused, and the bundle never names a
//! path: the socket fixes the repository). The host's real `git upload-pack` or `git
//! receive-pack` runs on the repository, as an SSH exec would run it, with a clean
//! environment (`PATH` and `HOME` only: none of bottle's tokens, no `GIT_*` variable);
//! its stdin, stdout and stderr are relayed. Real git writes the objects and refs, and runs
//! the repository's own hooks, as a push to it from this machine would. git's stderr reaches
//! the bundle with the repository's host path replaced by the upstream's name.
//!
//! What is read from the socket is bounded: a request line of at most
//! [`local::MAX_REQUEST`] bytes within [`REQUEST_TIMEOUT`], then at most
//! [`LocalRepo::max_input`] bytes of the service's input; at most [`MAX_CONNECTIONS`]
//! services run at once per upstream. Serving stops with the run: its undo ends the listeners
//! and every service under way, and removes the sockets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::daemons::git_gate::Service;
use crate::daemons::git_gate::UPLOAD_REQUEST_LIMIT;
use crate::daemons::git_gate::local::{self, EXIT, MAX_FRAME, STDERR, STDOUT};
use crate::plan::{UpstreamPlan, UpstreamSource};

/// How long a connection may take to say which service it wants.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most services running at once for one upstream.
pub const MAX_CONNECTIONS: usize = 16;
/// How much stderr is gathered into one line before it is sent on.
const STDERR_LINE: usize = 4096;

/// A local upstream, checked: its repository's canonical host path, and the git that serves it.
#[derive(Debug, Clone)]
pub struct LocalRepo {
    pub name: String,
    /// As the recipe wrote it (for messages).
    pub written: String,
    pub path: PathBuf,
    pub git: PathBuf,
    /// The most bytes one service's stdin may carry: what git-gate itself would forward (the
    /// larger of `max_push_bytes` and a fetch request's limit).
    pub max_input: u64,
}

/// Expands (`~/`) and checks every local upstream: the host's git must find a repository at
/// the path, as `git upload-pack` finds one when it serves it. Every problem is named at once.
pub async fn check(upstreams: &[UpstreamPlan]) -> Result<Vec<LocalRepo>> {
    let locals: Vec<(&UpstreamPlan, &str)> = upstreams
        .iter()
        .filter_map(|u| match &u.source {
            UpstreamSource::Local { path } => Some((u, path.as_str())),
            UpstreamSource::Ssh { .. } => None,
        })
        .collect();
    if locals.is_empty() {
        return Ok(Vec::new());
    }
    let git = find_git().context(
        "a [[git-gate.upstreams]] path is served by the host's git, and git is not on PATH; install git",
    )?;
    let mut repos = Vec::new();
    let mut problems = Vec::new();
    for (up, written) in locals {
        match check_one(&git, up, written).await {
            Ok(r) => repos.push(r),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(repos)
}

async fn check_one(git: &Path, up: &UpstreamPlan, written: &str) -> Result<LocalRepo> {
    let name = &up.name;
    let expanded = crate::files::expand_home(written)?;
    let fix = "point path at a git repository on this machine (`git init` one, or clone it there)";
    let path = std::fs::canonicalize(&expanded).map_err(|e| {
        anyhow::anyhow!(
            "git-gate upstream {name:?}: path {written:?} ({}) cannot be used: {}; {fix}",
            expanded.display(),
            e.kind()
        )
    })?;
    // The same search for a repository that serving it does (no walking up to a parent's).
    let out = clean_git(git)
        .args(["upload-pack", "--advertise-refs"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("cannot run {}", git.display()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        bail!(
            "git-gate upstream {name:?}: path {written:?} ({}) is not a git repository (git says: {}); {fix}",
            path.display(),
            said.trim().replace('\n', " / ")
        );
    }
    Ok(LocalRepo {
        name: name.to_string(),
        written: written.to_string(),
        path,
        git: git.to_path_buf(),
        max_input: up.max_push_bytes.max(UPLOAD_REQUEST_LIMIT),
    })
}

fn find_git() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("git"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// git with a clean environment (`PATH` and `HOME` only), started in `/`: the repository is
/// named by its argument only.
fn clean_git(git: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(git);
    cmd.env_clear().current_dir("/").kill_on_drop(true);
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// The local upstreams being served; [`Served::stop`] ends it all.
pub struct Served {
    tasks: JoinSet<()>,
    sockets: Vec<PathBuf>,
}

impl Served {
    /// Ends the listeners and every service under way (their git is killed), and removes the
    /// sockets.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Listens on `dir/NAME` for each repository (`dir` is made, private to this user).
pub fn serve(repos: &[LocalRepo], dir: &Path) -> Result<Served> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    let mut served = Served {
        tasks: JoinSet::new(),
        sockets: Vec::new(),
    };
    for repo in repos {
        let listener = bind(dir, &repo.name)?;
        served.sockets.push(dir.join(&repo.name));
        served
            .tasks
            .spawn(accept_loop(listener, Arc::new(repo.clone())));
    }
    Ok(served)
}

/// Binds `dir/name`, through `/proc/self/fd` when the whole path is longer than a socket
/// address holds (108 bytes).
fn bind(dir: &Path, name: &str) -> Result<UnixListener> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let std_listener = if path.as_os_str().len() < 100 {
        std::os::unix::net::UnixListener::bind(&path)
    } else {
        let d =
            std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let short = format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&d)
        );
        std::os::unix::net::UnixListener::bind(short)
    }
    .with_context(|| format!("cannot listen on {}", path.display()))?;
    std_listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(std_listener)?)
}

async fn accept_loop(listener: UnixListener, repo: Arc<LocalRepo>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let repo = repo.clone();
                running.spawn(async move {
                    match serve_one(stream, &repo).await {
                        Ok(()) => {}
                        // git-gate hung up early, as a client that read only the refs does.
                        Err(e) if peer_left(&e) => {
                            tracing::debug!("local upstream {}: {e:#}", repo.name)
                        }
                        Err(e) => tracing::warn!("local upstream {}: {e:#}", repo.name),
                    }
                    drop(permit);
                });
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

/// Whether an error is the bundle's side of the socket going away.
fn peer_left(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        })
    })
}

/// One connection: its request, then the service, relayed.
async fn serve_one(stream: UnixStream, repo: &LocalRepo) -> Result<()> {
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let asked = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut read)
            .take(local::MAX_REQUEST as u64)
            .read_until(b'\n', &mut line),
    )
    .await;
    let write = Arc::new(Mutex::new(write));
    let Some(service) = asked
        .ok()
        .and_then(|r| r.ok())
        .and_then(|_| local::parse_request(&line))
    else {
        let words = "bottle run serves git-upload-pack and git-receive-pack only\n";
        send(&write, STDERR, words.as_bytes()).await?;
        send(&write, EXIT, &128u32.to_be_bytes()).await?;
        bail!("a request that is not a git service was refused");
    };
    let sub = match service {
        Service::UploadPack => "upload-pack",
        Service::ReceivePack => "receive-pack",
    };
    let started = clean_git(&repo.git)
        .arg(sub)
        .arg(&repo.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match started {
        Ok(c) => c,
        Err(e) => {
            let words = format!("bottle run cannot start git {sub}: {}\n", e.kind());
            send(&write, STDERR, words.as_bytes()).await?;
            send(&write, EXIT, &128u32.to_be_bytes()).await?;
            bail!("cannot start {} {sub}: {e}", repo.git.display());
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let (stdout, stderr) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    // The service's input: whatever follows the request line, to its end or `max_input`
    // bytes (git then finds it cut short, and fails).
    let limit = repo.max_input;
    let input = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut (&mut read).take(limit), &mut stdin).await;
    });
    let hidden = repo.path.to_string_lossy().into_owned();
    let shown = format!("<upstream {}>", repo.name);
    let (out, err) = tokio::join!(
        relay(stdout, &write),
        relay_lines(stderr, &write, |l| l.replace(&hidden, &shown)),
    );
    input.abort();
    out?;
    err?;
    let status = child.wait().await?;
    let code = status.code().map_or(128, |c| c as u32);
    send(&write, EXIT, &code.to_be_bytes()).await?;
    write.lock().await.shutdown().await?;
    Ok(())
}

/// Sends one frame.
async fn send(write: &Mutex<OwnedWriteHalf>, kind: u8, data: &[u8]) -> Result<()> {
    let mut w = write.lock().await;
    w.write_all(&local::frame_header(kind, data.len())).await?;
    w.write_all(data).await?;
    Ok(())
}

/// Relays stdout to its end, frame by frame.
async fn relay(mut from: impl AsyncRead + Unpin, write: &Mutex<OwnedWriteHalf>) -> Result<()> {
    let mut buf = vec![0u8; (64 << 10).min(MAX_FRAME)];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        send(write, STDOUT, &buf[..n]).await?;
    }
}

/// Relays stderr line by line (at most [`STDERR_LINE`] bytes a piece), each through `scrub`.
async fn relay_lines(
    from: impl AsyncRead + Unpin,
    write: &Mutex<OwnedWriteHalf>,
    scrub: impl Fn(&str) -> String,
) -> Result<()> {
    let mut from = BufReader::new(from);
    loop {
        let mut line = Vec::new();
        let n = (&mut from)
            .take(STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let text = scrub(&String::from_utf8_lossy(&line));
        send(write, STDERR, text.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::git_gate::local::open;
    use tokio::io::AsyncWriteExt;

    fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.unwrap_or_default())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        out.stdout
    }

    /// A repository on the host served on `dir/origin` with `max_input`; and a pack (of a
    /// commit with 200 KB of noise) with the push request's head for it.
    fn setup(dir: &Path, max_input: u64) -> (LocalRepo, Vec<u8>) {
        let repo = dir.join("repo.git");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "--bare"], None);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"], None);
        let mut noise = vec![0u8; 200_000];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut noise,
        )
        .unwrap();
        std::fs::write(work.join("noise"), noise).unwrap();
        git(&work, &["add", "noise"], None);
        git(&work, &["commit", "-qm", "noise"], None);
        let head = String::from_utf8(git(&work, &["rev-parse", "HEAD"], None)).unwrap();
        let pack = git(
            &work,
            &["pack-objects", "--stdout", "-q", "--revs"],
            Some(b"HEAD\n"),
        );
        let line = format!(
            "{} {} refs/heads/agent/x\0report-status\n",
            "0".repeat(40),
            head.trim()
        );
        let mut body = format!("{:04x}{line}0000", line.len() + 4).into_bytes();
        body.extend(pack);
        let local = LocalRepo {
            name: "origin".into(),
            written: repo.display().to_string(),
            path: repo,
            git: find_git().unwrap(),
            max_input,
        };
        (local, body)
    }

    async fn push(dir: &Path, body: Vec<u8>) -> (Vec<u8>, String) {
        let socket = dir.join("sockets/origin");
        let mut remote = open("origin", socket.to_str().unwrap(), Service::ReceivePack)
            .await
            .unwrap();
        let mut buf = Vec::new();
        remote.advertisement(&mut buf).await.unwrap();
        remote.send(body.into()).await.unwrap();
        remote.eof().await.unwrap();
        while let Some(b) = remote.next().await {
            buf.extend_from_slice(&b);
        }
        (buf, remote.failure("ended").to_string())
    }

    #[tokio::test]
    async fn the_host_side_runs_real_git_and_cuts_input_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        // Within the bound: real git takes the pack and writes the ref.
        let (repo, body) = setup(dir.path(), 1 << 20);
        let served = serve(std::slice::from_ref(&repo), &dir.path().join("sockets")).unwrap();
        let (out, _) = push(dir.path(), body.clone()).await;
        assert!(
            String::from_utf8_lossy(&out).contains("ok refs/heads/agent/x"),
            "{out:?}"
        );
        served.stop().await;
        assert!(!dir.path().join("sockets/origin").exists());
        let refs = git(&repo.path, &["for-each-ref"], None);
        assert!(String::from_utf8_lossy(&refs).contains("refs/heads/agent/x"));

        // Over it: the input stops at the bound, git fails, no ref is written.
        let dir = tempfile::tempdir().unwrap();
        let (repo, body) = setup(dir.path(), 100_000);
        assert!(body.len() > 150_000, "{}", body.len());
        let served = serve(std::slice::from_ref(&repo), &dir.path().join("sockets")).unwrap();
        let (out, said) = push(dir.path(), body).await;
        assert!(
            !String::from_utf8_lossy(&out).contains("ok refs/heads/agent/x"),
            "{out:?}"
        );
        assert!(said.contains("exit"), "{said}");
        let refs = git(&repo.path, &["for-each-ref"], None);
        assert!(refs.is_empty(), "{}", String::from_utf8_lossy(&refs));

        // Anything but a service's name is refused.
        let mut raw = UnixStream::connect(dir.path().join("sockets/origin"))
            .await
            .unwrap();
        raw.write_all(b"git-upload-pack /etc\n").await.unwrap();
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("serves git-upload-pack and git-receive-pack only"),
            "{text}"
        );
        assert!(
            answer.ends_with(&[EXIT, 0, 0, 0, 4, 0, 0, 0, 128]),
            "{answer:?}"
        );
        served.stop().await;
    }

    #[test]
    fn a_long_folder_still_gets_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(120));
        std::fs::create_dir_all(&long).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _l = bind(&long, "origin").unwrap();
            assert!(long.join("origin").exists());
        });
    }
}
