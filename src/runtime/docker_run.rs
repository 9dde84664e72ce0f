//! What a run asks of the Docker Engine, through its API (bollard): networks, image loads by
//! id, containers, file uploads by tar, and finding a run's resources by label (execs are in
//! `docker_exec`).
//!
//! Every function here is one engine operation with an error that names it; ordering, undo and
//! naming are the run module's business. Removing something that is already gone succeeds, so
//! teardown and `bottle down` can run twice.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, Mount,
    MountTypeEnum, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use ipnet::Ipv4Net;

pub type Labels = HashMap<String, String>;

/// Keeps a container guest alive without depending on its image's entry point; exits on TERM.
pub const KEEPALIVE: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 1; done",
];

/// The docker bridge option that leaves the bridge without an address: the host is then no
/// peer of the network (no gateway to reach the host or, through it, anything else).
const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";

fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(e: &DockerError) -> bool {
    status(e) == Some(404)
}

/// Subnets of every docker network on the engine.
pub async fn used_subnets(docker: &Docker) -> Result<Vec<Ipv4Net>> {
    let nets = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| anyhow!("cannot list docker networks: {e}"))?;
    let mut out = Vec::new();
    for n in nets {
        for c in n.ipam.and_then(|i| i.config).unwrap_or_default() {
            if let Some(s) = c.subnet.as_deref().and_then(|s| s.parse::<Ipv4Net>().ok()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

pub enum NetworkCreated {
    Created,
    /// The engine refused the subnet because another network holds it.
    Overlap(String),
}

/// Creates a bridge network pinned to `subnet` (gateway `.1`). `internal`: no way out, and the
/// host holds no address on it, so its members reach only each other.
pub async fn create_network(
    docker: &Docker,
    name: &str,
    subnet: Ipv4Net,
    internal: bool,
    labels: &Labels,
) -> Result<NetworkCreated> {
    let mut options = HashMap::new();
    if internal {
        options.insert(INHIBIT_IPV4.to_string(), "true".to_string());
    }
    let req = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".to_string()),
        internal: Some(internal),
        ipam: Some(Ipam {
            driver: Some("default".to_string()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(
                    std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1).to_string(),
                ),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(options),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => Ok(NetworkCreated::Created),
        Err(e) if e.to_string().contains("overlaps") => Ok(NetworkCreated::Overlap(e.to_string())),
        Err(e) => Err(anyhow!("cannot create network {name} ({subnet}): {e}")),
    }
}

pub async fn remove_network(docker: &Docker, name: &str) -> Result<()> {
    match docker.remove_network(name).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow!("cannot remove network {name}: {e}")),
    }
}

/// Makes sure the engine holds image `id`, loading `archive` only when it does not. Returns
/// whether it loaded.
pub async fn ensure_image(docker: &Docker, id: &str, archive: &Path) -> Result<bool> {
    ensure_image_metered(docker, id, archive, None).await
}

/// [`ensure_image`], counting the bytes sent on `meter`.
pub async fn ensure_image_metered(
    docker: &Docker,
    id: &str,
    archive: &Path,
    meter: Option<crate::progress::Meter>,
) -> Result<bool> {
    match docker.inspect_image(id).await {
        Ok(_) => return Ok(false),
        Err(e) if is_not_found(&e) => {}
        Err(e) => bail!("cannot inspect image {id}: {e}"),
    }
    let file = tokio::fs::File::open(archive)
        .await
        .with_context(|| format!("cannot open image archive {}", archive.display()))?;
    let mut chunks = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed();
    if let Some(meter) = meter {
        chunks = meter.count(chunks);
    }
    let body = bollard::body_try_stream(chunks);
    let mut stream = docker.import_image(ImportImageOptionsBuilder::new().build(), body, None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| anyhow!("cannot load {}: {e}", archive.display()))?;
    }
    match docker.inspect_image(id).await {
        Ok(_) => Ok(true),
        Err(_) => bail!(
            "loaded {} but the engine has no image {id}; the entry is damaged: `bottle verify` checks it",
            archive.display()
        ),
    }
}

/// A bind mount of a host path.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `K=V` entries. They travel in the create body only, never on an argv.
    pub env: Vec<String>,
    pub binds: Vec<Bind>,
    pub user: Option<String>,
    /// The network it is created on, and its pinned address there.
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub labels: Labels,
    pub cap_drop: Vec<String>,
    /// `no-new-privileges`: right for the bundle; wrong for a guest whose image runs as a
    /// user, since root execs into it (chown, provisioning) would then hold no capability.
    pub no_new_privileges: bool,
    /// Open stdin once, for [`write_stdin`] before the container starts.
    pub stdin_once: bool,
    /// `NAME:IP` entries for the container's `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// A memory limit in bytes, swap included (the container gets no swap); none: unlimited.
    pub memory: Option<u64>,
}

async fn try_create(docker: &Docker, spec: ContainerSpec) -> Result<String, DockerError> {
    let endpoint = EndpointSettings {
        ipam_config: spec.ip.map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mounts: Vec<Mount> = spec
        .binds
        .iter()
        .map(|b| Mount {
            target: Some(b.target.clone()),
            source: Some(b.source.clone()),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(b.read_only),
            ..Default::default()
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint,
        cmd: spec.cmd,
        env: Some(spec.env),
        user: spec.user,
        labels: Some(spec.labels),
        open_stdin: Some(spec.stdin_once),
        stdin_once: Some(spec.stdin_once),
        attach_stdin: Some(spec.stdin_once),
        host_config: Some(HostConfig {
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            network_mode: Some(spec.network.clone()),
            memory: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            memory_swap: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            mounts: Some(mounts),
            cap_drop: (!spec.cap_drop.is_empty()).then_some(spec.cap_drop),
            security_opt: spec
                .no_new_privileges
                .then(|| vec!["no-new-privileges".to_string()]),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new()
        .name(&spec.name)
        .build();
    Ok(docker.create_container(Some(options), body).await?.id)
}

pub async fn create_container(docker: &Docker, spec: ContainerSpec) -> Result<String> {
    let name = spec.name.clone();
    try_create(docker, spec)
        .await
        .map_err(|e| anyhow!("cannot create container {name}: {e}"))
}

/// Creates a container; when the engine no longer holds its image (removed since the run's
/// image load, say by `docker image prune`), loads it from `archive` and tries once more.
pub async fn create_container_loading(
    docker: &Docker,
    spec: ContainerSpec,
    archive: &Path,
) -> Result<String> {
    let name = spec.name.clone();
    match try_create(docker, spec.clone()).await {
        Ok(id) => Ok(id),
        Err(e) if is_not_found(&e) => {
            ensure_image(docker, &spec.image, archive).await?;
            create_container(docker, spec).await
        }
        Err(e) => Err(anyhow!("cannot create container {name}: {e}")),
    }
}

/// Writes `bytes` to a created (not yet started) container's stdin, then closes it: what the
/// container reads first when it starts. The bytes travel on the engine's socket only, never
/// in the container's config. The container must be created with `stdin_once`.
pub async fn write_stdin(docker: &Docker, container: &str, bytes: &[u8]) -> Result<()> {
    use bollard::query_parameters::AttachContainerOptionsBuilder;
    let options = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stream(true)
        .build();
    let attached = docker
        .attach_container(container, Some(options))
        .await
        .map_err(|e| anyhow!("cannot attach to {container}'s stdin: {e}"))?;
    let mut input = attached.input;
    input
        .write_all(bytes)
        .await
        .map_err(|e| anyhow!("cannot write to {container}'s stdin: {e}"))?;
    input
        .shutdown()
        .await
        .map_err(|e| anyhow!("cannot close {container}'s stdin: {e}"))?;
    Ok(())
}

/// Attaches a (created, not yet started) container to another network.
pub async fn connect(docker: &Docker, container: &str, network: &str) -> Result<()> {
    docker
        .connect_network(
            network,
            NetworkConnectRequest {
                container: Some(container.to_string()),
                endpoint_config: Some(EndpointSettings::default()),
            },
        )
        .await
        .map_err(|e| anyhow!("cannot attach {container} to network {network}: {e}"))
}

pub async fn start(docker: &Docker, name: &str) -> Result<()> {
    docker
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| anyhow!("cannot start container {name}: {e}"))
}

/// Removes a container, killing it first if it runs.
pub async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // "removal already in progress": someone else (bottle down, the engine) is on it.
        Err(e) if status(&e) == Some(409) => Ok(()),
        Err(e) => Err(anyhow!("cannot remove container {name}: {e}")),
    }
}

/// Whether a container runs, and its exit code when it does not.
pub async fn state(docker: &Docker, name: &str) -> Result<(bool, Option<i64>)> {
    let c = docker
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| anyhow!("cannot inspect container {name}: {e}"))?;
    let s = c.state.unwrap_or_default();
    Ok((s.running.unwrap_or(false), s.exit_code))
}

/// A container's address on a network.
pub async fn address(docker: &Docker, name: &str, network: &str) -> Result<Option<Ipv4Addr>> {
    let c = docker
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| anyhow!("cannot inspect container {name}: {e}"))?;
    Ok(c.network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .and_then(|ip| ip.parse().ok()))
}

/// The last `lines` lines a container printed.
pub async fn logs_tail(docker: &Docker, name: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text
}

/// Extracts a tar archive at `/` in a container.
pub async fn upload(docker: &Docker, container: &str, tar: Vec<u8>) -> Result<()> {
    let options = UploadToContainerOptionsBuilder::new().path("/").build();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(|e| anyhow!("cannot copy files into {container}: {e}"))
}

/// A resource's name and labels.
type Labelled = (String, HashMap<String, String>);

/// The containers (stopped ones too) and the networks carrying label `key=value`.
async fn labelled(
    docker: &Docker,
    key: &str,
    value: &str,
) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    let filter = HashMap::from([("label", vec![format!("{key}={value}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| anyhow!("cannot list containers: {e}"))?
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.into_iter().next()?;
            Some((
                name.trim_start_matches('/').to_string(),
                c.labels.unwrap_or_default(),
            ))
        })
        .collect();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .map_err(|e| anyhow!("cannot list networks: {e}"))?
        .into_iter()
        .filter_map(|n| Some((n.name?, n.labels.unwrap_or_default())))
        .collect();
    Ok((containers, networks))
}

/// Names of the containers and networks carrying label `key=value`.
pub async fn by_label(
    docker: &Docker,
    key: &str,
    value: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let (containers, networks) = labelled(docker, key, value).await?;
    let names = |v: Vec<Labelled>| v.into_iter().map(|(name, _)| name).collect();
    Ok((names(containers), names(networks)))
}

/// Values of `key` on every container and network that carries label `filter_key=filter_value`.
pub async fn label_values(
    docker: &Docker,
    filter_key: &str,
    filter_value: &str,
    key: &str,
) -> Result<Vec<String>> {
    let (containers, networks) = labelled(docker, filter_key, filter_value).await?;
    let mut out: Vec<String> = containers
        .into_iter()
        .chain(networks)
        .filter_map(|(_, mut labels)| labels.remove(key))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// A tar archive (in memory) of files to extract at `/`: guest path → (bytes, mode). It holds
/// no folder entries: the engine creates missing parents, and an entry for an existing folder
/// (say the guest's home) would reset its owner and mode.
pub fn tar_of(files: &[super::FileIn]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for super::FileIn { path, bytes, mode } in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path.trim_start_matches('/'), bytes.as_slice())?;
    }
    Ok(b.into_inner()?)
}
