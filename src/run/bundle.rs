//! The `bundle start` step: the bundle container at `.2` of the guest's network, running the
//! spec's daemons with its env and mounts, and a wait until pipelock listens.
//!
//! Token values are read from bottle's own environment here and go into the container-create
//! body only: never on an argv, in a file or a log line.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::names::LABEL_ROLE;
use super::record::Resource;
use super::steps::{Ctx, tracked};
use super::subnet;
use super::undo::UndoStack;
use super::upstreams;
use crate::daemons::RUN_ENV;
use crate::manifest::MountSource;
use crate::plan::HostTarget;
use crate::runtime::docker_run::{self as engine, Bind, ContainerSpec};
use ipnet::Ipv4Net;

/// The folder of the run's CA files (see `run::ca`).
pub fn ca_dir(ctx: &Ctx) -> PathBuf {
    ctx.run_dir.join("ca")
}

pub async fn start_bundle(
    ctx: &Ctx,
    undo: &mut UndoStack,
    bundle_ip: Ipv4Addr,
    outbound: Option<Ipv4Net>,
) -> Result<()> {
    let spec = ctx.entry.bundle_spec();
    let secrets = secrets(&spec.secrets)?;
    let mut env: Vec<String> = spec.env.iter().map(ToString::to_string).collect();
    env.push(format!("{RUN_ENV}={}", ctx.names.run_id));
    let name = ctx.names.bundle();
    ctx.note(Resource::Container { name: name.clone() })?;
    let mut labels = ctx.labels.clone();
    labels.insert(LABEL_ROLE.into(), "bundle".into());
    let mut cmd = vec![
        "--daemons".to_string(),
        spec.daemons
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(","),
    ];
    if secrets.is_some() {
        cmd.push("--secrets-on-stdin".to_string());
    }
    // `host-gateway`: the host as the bundle's way out sees it (its network's gateway).
    let gateway = outbound
        .map(|o| subnet::gateway(&o))
        .unwrap_or_else(|| subnet::gateway_of_bundle(bundle_ip));
    let container = ContainerSpec {
        name: name.clone(),
        image: ctx.entry.bundle.image().id.clone(),
        entrypoint: None,
        cmd: Some(cmd),
        env,
        binds: binds(ctx)?,
        user: None,
        network: ctx.names.guest_net(),
        ip: Some(bundle_ip),
        labels,
        cap_drop: Vec::new(),
        no_new_privileges: true,
        stdin_once: secrets.is_some(),
        extra_hosts: spec
            .hosts
            .iter()
            .map(|(host, target)| match target {
                HostTarget::Ip(ip) => format!("{host}:{ip}"),
                HostTarget::HostGateway => format!("{host}:{gateway}"),
            })
            .collect(),
        memory: Some(spec.memory),
    };
    serve_local_upstreams(ctx, undo)?;
    let archive = ctx.entry.bundle.path(&ctx.entry.bundle.image().archive);
    let (docker, n) = (ctx.docker.clone(), name.clone());
    let create =
        async move { engine::create_container_loading(&docker, container, &archive).await };
    let (docker, n2) = (ctx.docker.clone(), name.clone());
    let (handle, (what, action)) =
        tracked(format!("remove bundle container {n}"), create, move || {
            Box::pin(async move { engine::remove_container(&docker, &n2).await })
        });
    undo.push(what, action);
    handle.await??;
    if let Some(bytes) = secrets {
        // The tokens reach the bundle on its stdin: never its config (`docker inspect`).
        engine::write_stdin(&ctx.docker, &name, &bytes).await?;
    }
    let probe_net = if outbound.is_some() {
        let out = ctx.names.outbound_net();
        engine::connect(&ctx.docker, &name, &out).await?;
        out
    } else {
        ctx.names.guest_net()
    };
    engine::start(&ctx.docker, &name).await?;
    let ports: Vec<u16> = spec
        .daemons
        .iter()
        .filter(|d| d.probed())
        .filter_map(|d| spec.ports.get(d).copied())
        .collect();
    wait_ready(ctx, &name, &probe_net, &ports).await
}

/// The local git-gate upstreams, served on their sockets (in the folder the bundle mounts)
/// until the run's undo stops them, after the bundle is gone.
fn serve_local_upstreams(ctx: &Ctx, undo: &mut UndoStack) -> Result<()> {
    if ctx.local_upstreams.is_empty() {
        return Ok(());
    }
    let dir = ctx.run_dir.join(crate::daemons::git_gate::LOCAL_RUN_DIR);
    let served = upstreams::serve(&ctx.local_upstreams, &dir)?;
    undo.push("stop serving the local git-gate upstreams", async move {
        served.stop().await;
        Ok(())
    });
    Ok(())
}

/// The secrets the bundle needs, read from bottle's own environment, as the JSON object the
/// bundle reads on its stdin; `None` when it needs none.
fn secrets(names: &[String]) -> Result<Option<Vec<u8>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut values = std::collections::BTreeMap::new();
    for name in names {
        match std::env::var(name) {
            Ok(value) if value.trim().is_empty() => bail!(
                "the bundle needs {name} from bottle's environment (the recipe's egress routes send it upstream), and it is empty: export {name}=... (the token itself) and run again"
            ),
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            Err(_) => bail!(
                "the bundle needs {name} from bottle's environment (the recipe's egress routes send it upstream), and it is not set: export {name}=... and run again"
            ),
        }
    }
    Ok(Some(
        serde_json::to_vec(&values).expect("strings serialize"),
    ))
}

/// The bundle's bind mounts, from the spec's mount sources.
fn binds(ctx: &Ctx) -> Result<Vec<Bind>> {
    let mut binds = Vec::new();
    for mount in &ctx.entry.bundle_spec().mounts {
        let source = match &mount.source {
            MountSource::Config(p) => ctx.entry.config.path(p),
            MountSource::Ca(f) => ca_dir(ctx).join(f),
            MountSource::Host(h) => {
                let path = crate::files::expand_home(h)?;
                if !path.exists() {
                    bail!(
                        "the bundle mounts {} at {}, and it does not exist; create it or fix the recipe",
                        path.display(),
                        mount.target
                    );
                }
                path
            }
            MountSource::RunDir(d) => {
                let dir = ctx.run_dir.join(d);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                dir
            }
        };
        binds.push(Bind {
            source: source.to_string_lossy().into_owned(),
            target: mount.target.clone(),
            read_only: mount.read_only,
        });
    }
    Ok(binds)
}

/// Waits until the bundle listens on every probed port (from the host, on `network`), or
/// fails with its log when it exits.
async fn wait_ready(ctx: &Ctx, name: &str, network: &str, ports: &[u16]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = engine::address(&ctx.docker, name, network).await?;
    let mut waiting: Vec<u16> = ports.to_vec();
    loop {
        let (running, code) = engine::state(&ctx.docker, name).await?;
        if !running {
            let log = engine::logs_tail(&ctx.docker, name, 20).await;
            bail!(
                "the bundle exited (code {}) right after starting; its last lines:\n{}",
                code.unwrap_or(-1),
                log.trim_end()
            );
        }
        let Some(ip) = addr else { return Ok(()) };
        let mut still = Vec::new();
        for port in waiting {
            let probe = tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(SocketAddr::from((ip, port))),
            )
            .await;
            match probe {
                Ok(Ok(_)) => {}
                // The host cannot reach the bundle's network (not Linux?): go on unprobed.
                Err(_) if Instant::now() >= deadline => {
                    tracing::warn!("cannot probe the bundle at {ip}:{port}; going on");
                }
                Ok(Err(e)) if Instant::now() >= deadline => bail!(
                    "the bundle runs but nothing listens on {ip}:{port} after 15s ({e}); its log: `docker logs {name}`"
                ),
                _ => still.push(port),
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
