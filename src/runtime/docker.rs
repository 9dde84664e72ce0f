//! The Docker Engine, through its API (bollard). No docker CLI is spawned.
//!
//! This module owns talking to the engine: connecting (with API version negotiation, so an
//! older engine such as Debian's 20.10 works; a socket the user may not open is told apart
//! from an engine that is not there, [`EngineError`]), building an image from a context streamed from
//! disk ([`crate::context`]), pulling by digest, and saving an image as an archive (whose image
//! id [`crate::oci`] reads).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::models::BuildInfo;
use bollard::query_parameters::{
    BuildImageOptions, BuildImageOptionsBuilder, CreateImageOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::context::{ContextError, ContextStream};

/// The default engine address when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Why the engine cannot be used: the problem and its fix, apart, so `bottle doctor` can show
/// them on their own lines. A socket the user may not open is told apart from an engine that
/// is not there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{problem}; {fix}")]
pub struct EngineError {
    /// Permission denied on the socket (the engine may well be running).
    pub denied: bool,
    pub problem: String,
    pub fix: String,
}

/// Where the client connects: `DOCKER_HOST`, else [`DEFAULT_HOST`].
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// Connects to the local engine (`DOCKER_HOST` or the default socket) and agrees on an API
/// version with it.
pub async fn connect() -> Result<Docker> {
    Ok(connect_checked().await?)
}

/// [`connect`], with the reason it failed typed. A unix socket is opened once first, so that
/// permission denied is told apart from nothing listening.
pub async fn connect_checked() -> Result<Docker, EngineError> {
    let host = engine_host();
    if let Some(path) = host.strip_prefix("unix://") {
        probe_socket(&host, Path::new(path))?;
    }
    let docker =
        Docker::connect_with_defaults().map_err(|e| unreachable_engine(&host, &e.to_string()))?;
    docker.negotiate_version().await.map_err(|e| {
        if is_denied(&e) {
            let path = host.strip_prefix("unix://").unwrap_or(&host);
            denied_socket(Path::new(path))
        } else {
            unreachable_engine(&host, &e.to_string())
        }
    })
}

/// Opens the socket and closes it again.
fn probe_socket(host: &str, path: &Path) -> Result<(), EngineError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied_socket(path)),
        Err(e) => Err(unreachable_engine(host, &e.to_string())),
    }
}

fn is_denied(e: &bollard::errors::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn unreachable_engine(host: &str, cause: &str) -> EngineError {
    let set = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.trim().is_empty() => format!(" (DOCKER_HOST is {h})"),
        _ => String::new(),
    };
    EngineError {
        denied: false,
        problem: format!("cannot reach the Docker Engine at {host}: {cause}"),
        fix: format!(
            "start it (`sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at a running engine{set}"
        ),
    }
}

/// Permission denied on `socket`: names its owner, group and mode, and the group to join.
fn denied_socket(socket: &Path) -> EngineError {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(socket).ok();
    let group = meta
        .as_ref()
        .map(|m| group_name(m.gid()).unwrap_or_else(|| format!("gid {}", m.gid())))
        .unwrap_or_else(|| "docker".to_string());
    let owned = meta
        .map(|m| {
            format!(
                " (owner uid {}, group {group}, mode {:o})",
                m.uid(),
                m.mode() & 0o777
            )
        })
        .unwrap_or_default();
    EngineError {
        denied: true,
        problem: format!(
            "permission denied on the Docker Engine's socket {}{owned}: the engine may be running, but this user may not talk to it",
            socket.display()
        ),
        fix: format!(
            "add your user to the `{group}` group (`sudo usermod -aG {group} $USER`, then log in again or run `newgrp {group}`), or set DOCKER_HOST to an engine socket you may open (rootless Docker: unix:///run/user/$(id -u)/docker.sock)"
        ),
    }
}

/// The name of group `gid` in /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// Builds an image from a streamed context, tagged `tag` with `labels`; `on_line` sees each
/// line the engine prints; returns the image id. When the build fails because
/// the context could not be sent whole (an input changed after it was hashed, or could not be
/// read), that [`ContextError`] is the error, not the engine's broken-pipe message.
pub async fn build(
    docker: &Docker,
    ctx: ContextStream,
    tag: &str,
    labels: HashMap<String, String>,
    on_line: impl FnMut(&str),
) -> Result<String> {
    let ContextStream {
        dockerfile_name,
        stream,
        done,
    } = ctx;
    let options = build_options(&dockerfile_name, tag, &labels);
    let body = bollard::body_try_stream(stream);
    let progress = docker.build_image(options, None, Some(body));
    let built = follow_build(docker, progress, tag, on_line).await;
    // The request, and with it the body, is gone by now: the producer ends soon whatever
    // happened. Should the engine hold the connection open, its own error stands.
    let sent = match tokio::time::timeout(Duration::from_secs(30), done).await {
        Ok(joined) => joined.map_err(|e| anyhow!("the build context producer failed: {e}"))?,
        Err(_) => return built,
    };
    match (built, sent) {
        (built, Ok(_)) | (built, Err(ContextError::Abandoned)) => built,
        (built, Err(e)) => {
            if built.is_ok() {
                // The engine took a context that was not what was hashed: drop what it made.
                let options = RemoveImageOptionsBuilder::default().noprune(true).build();
                let _ = docker.remove_image(tag, Some(options), None).await;
            }
            Err(e.into())
        }
    }
}

/// The build's options: always remove intermediate containers, also on failure.
fn build_options(
    dockerfile: &str,
    tag: &str,
    labels: &HashMap<String, String>,
) -> BuildImageOptions {
    BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build()
}

/// Follows one build to its end, passing each progress line to `on_line`; returns the image
/// id. The request (and its body) is dropped on return.
async fn follow_build(
    docker: &Docker,
    stream: impl Stream<Item = Result<BuildInfo, bollard::errors::Error>>,
    tag: &str,
    mut on_line: impl FnMut(&str),
) -> Result<String> {
    let mut stream = Box::pin(stream);
    let mut id = None;
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow!("the Docker Engine refused the build: {e}"))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message).or(info.error) {
            let context = tail.join("");
            bail!("docker build failed: {}\n{context}", detail.trim());
        }
        if let Some(s) = info.stream {
            for line in s.lines().filter(|l| !l.trim().is_empty()) {
                on_line(line.trim());
            }
            tail.push(s);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
        if let Some(aux) = info.aux {
            id = aux.id;
        }
    }
    drop(stream);
    match id {
        Some(id) => Ok(id),
        None => {
            let inspect = docker
                .inspect_image(tag)
                .await
                .with_context(|| format!("the built image {tag} is not in the engine"))?;
            inspect
                .id
                .ok_or_else(|| anyhow!("the engine reports no id for {tag}"))
        }
    }
}

/// Builds an image from a streamed context (as [`build`]), saves it into `dest` (as
/// [`save_archive`]), checks that the archive holds the image that was built, and removes the
/// built image from the engine (its parent layers stay: they are the build cache). Returns
/// the id of the image saved and the built image's parent (that cache's top), if any.
pub async fn build_and_save(
    docker: &Docker,
    ctx: ContextStream,
    tag: &str,
    labels: HashMap<String, String>,
    dest: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<(String, Option<String>)> {
    let id = build(docker, ctx, tag, labels, &mut on_line).await?;
    on_line("saving the image");
    let saved = save_archive(docker, &id, dest).await?;
    if saved != id {
        bail!("the engine built image {id} but saved {saved}; build again");
    }
    let parent = match docker.inspect_image(&id).await {
        Ok(i) => i.parent.filter(|p| !p.is_empty()),
        Err(_) => None,
    };
    let options = RemoveImageOptionsBuilder::default().noprune(true).build();
    let _ = docker.remove_image(&id, Some(options), None).await;
    Ok((id, parent))
}

/// Streams `docker save IMAGE` into `dest` (mode 0644); returns the image id the archive
/// records.
pub async fn save_archive(docker: &Docker, image: &str, dest: &Path) -> Result<String> {
    save_image(docker, image, dest).await?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644))?;
    crate::oci::image_id(dest)
}

/// Pulls `reference` (pinned by digest) into the engine.
pub async fn pull(docker: &Docker, reference: &str) -> Result<()> {
    let options = CreateImageOptionsBuilder::default()
        .from_image(reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow!("cannot pull {reference}: {e}; on a host with no registry, save the image elsewhere (`docker save`) and use `archive =` in the recipe")
        })?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            bail!("cannot pull {reference}: {detail}");
        }
    }
    Ok(())
}

/// Streams `docker save IMAGE` into `dest`.
pub async fn save_image(docker: &Docker, image: &str, dest: &Path) -> Result<()> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow!("cannot save image {image}: {e}"))?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    file.sync_all().await?;
    Ok(())
}
