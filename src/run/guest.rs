//! The guest's steps: `guest create`, `guest start` and `chown`.
//!
//! A container guest is created on the run's internal network only, pinned at `.3`, kept
//! alive by a shell loop, with the guest env; a smolvm guest with `--allow-cidr BUNDLE_IP/32`
//! and `-e K=V` for the guest env, from the pack or straight from the image archive. After
//! start, `chown -R USER:USER HOME` as root: packing remaps ownership to the packing user's
//! uid, and without this the agent cannot write its own dotfiles.

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use super::names::LABEL_ROLE;
use super::provision;
use super::record::Resource;
use super::steps::{Ctx, step, tracked};
use super::subnet;
use super::undo::UndoStack;
use crate::plan::{GuestBackend, GuestStart};
use crate::runtime::docker_run::{self as engine, ContainerSpec};
use crate::runtime::guest::Guest;
use crate::runtime::smolvm::{MachineCreate, MachineSource};

/// The guest's steps, in order: create, start, chown, provision. A container guest takes its
/// provisioning files while it starts (a created container accepts files), so only the
/// provisioning script is left for the `provision` step.
pub async fn guest_steps(
    ctx: &Ctx,
    undo: &mut UndoStack,
    env: &[(String, String)],
    subnet: Ipv4Net,
) -> Result<Guest> {
    let bundle_ip = subnet::bundle_ip(&subnet);
    let guest = step(ctx, "guest create", create(ctx, undo, env, subnet)).await?;
    let files = provision::files(ctx, bundle_ip).context("bottle run: step 'provision' failed")?;
    let early = match &guest {
        Guest::Docker { .. } => {
            let (guest, files, scratch) = (
                guest.clone(),
                files.files.clone(),
                ctx.run_dir.join("provision"),
            );
            Some(tokio::spawn(async move {
                guest.put_files(&files, &[], &scratch).await
            }))
        }
        Guest::Smolvm { .. } => None,
    };
    step(ctx, "guest start", async {
        match &guest {
            Guest::Docker { docker, container } => engine::start(docker, container).await,
            Guest::Smolvm { smolvm, machine } => {
                let (s, name) = (smolvm.clone(), machine.clone());
                undo.push(format!("stop machine {machine}"), async move {
                    s.machine_stop(&name).await
                });
                smolvm.machine_start(machine).await
            }
        }
    })
    .await?;
    let spec = ctx.entry.guest_spec();
    let (user, home) = (&spec.user, &spec.home);
    step(ctx, "chown", async {
        let cmd = vec![
            "chown".to_string(),
            "-R".to_string(),
            format!("{user}:{user}"),
            home.clone(),
        ];
        let out = guest.exec("0", None, env, &cmd).await?;
        if out.code != 0 {
            bail!(
                "`chown -R {user}:{user} {home}` exited {} in the guest: {}; the guest image must have the user {user} and the folder {home}",
                out.code,
                out.stderr.trim()
            );
        }
        Ok(())
    })
    .await?;
    step(
        ctx,
        "provision",
        provision::provision(ctx, &guest, env, files, early),
    )
    .await?;
    Ok(guest)
}

async fn create(
    ctx: &Ctx,
    undo: &mut UndoStack,
    env: &[(String, String)],
    subnet: Ipv4Net,
) -> Result<Guest> {
    match ctx.entry.guest_key().backend {
        GuestBackend::Docker => create_container(ctx, undo, env, subnet).await,
        GuestBackend::Smolvm => create_machine(ctx, undo, env, subnet).await,
    }
}

/// A container of the guest image on the run's internal network only, pinned at `.3`, kept
/// alive by a shell loop, with the guest env.
async fn create_container(
    ctx: &Ctx,
    undo: &mut UndoStack,
    env: &[(String, String)],
    subnet: Ipv4Net,
) -> Result<Guest> {
    let name = ctx.names.guest();
    let image = ctx.entry.guest.image();
    ctx.note(Resource::Container { name: name.clone() })?;
    let mut labels = ctx.labels.clone();
    labels.insert(LABEL_ROLE.into(), "guest".into());
    let spec = ContainerSpec {
        name: name.clone(),
        image: image.id.clone(),
        entrypoint: Some(engine::KEEPALIVE.iter().map(|s| s.to_string()).collect()),
        cmd: None,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        binds: Vec::new(),
        user: None,
        network: ctx.names.guest_net(),
        ip: Some(subnet::guest_ip(&subnet)),
        labels,
        cap_drop: vec!["NET_RAW".into()],
        no_new_privileges: false,
        stdin_once: false,
        extra_hosts: Vec::new(),
        memory: None,
    };
    let archive = ctx.entry.guest.path(&image.archive);
    let docker = ctx.docker.clone();
    let create = async move { engine::create_container_loading(&docker, spec, &archive).await };
    let (docker, n) = (ctx.docker.clone(), name.clone());
    let (handle, (what, action)) = tracked(
        format!("remove guest container {name}"),
        create,
        move || Box::pin(async move { engine::remove_container(&docker, &n).await }),
    );
    undo.push(what, action);
    handle.await??;
    Ok(Guest::Docker {
        docker: ctx.docker.clone(),
        container: name,
    })
}

/// A smolvm machine from the pack (or the image archive), restricted to the bundle's address
/// (`--allow-cidr BUNDLE_IP/32`), with the guest env.
async fn create_machine(
    ctx: &Ctx,
    undo: &mut UndoStack,
    env: &[(String, String)],
    subnet: Ipv4Net,
) -> Result<Guest> {
    let name = ctx.names.guest();
    let image = ctx.entry.guest.image();
    let smolvm = ctx
        .smolvm
        .clone()
        .expect("smolvm located for a smolvm guest");
    ctx.note(Resource::Machine { name: name.clone() })?;
    let from_pack = ctx.entry.guest_key().start == GuestStart::Pack;
    let source_path = if from_pack {
        let pack = image
            .pack
            .as_deref()
            .context("the guest component holds no pack for a pack-started guest")?;
        ctx.entry.guest.path(pack)
    } else {
        ctx.entry.guest.path(&image.archive)
    };
    let labels: Vec<(String, String)> = ctx
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (s, n) = (smolvm.clone(), name.clone());
    let bundle_ip = subnet::bundle_ip(&subnet);
    let env = env.to_vec();
    let create = async move {
        let source = if from_pack {
            MachineSource::Pack(&source_path)
        } else {
            MachineSource::Image(&source_path)
        };
        s.machine_create(&MachineCreate {
            name: &n,
            source,
            allow_cidr: &format!("{bundle_ip}/32"),
            env: &env,
            labels: &labels,
        })
        .await
    };
    let (s, n) = (smolvm.clone(), name.clone());
    // The delete waits for the create: a create cut short may still leave the machine.
    let (handle, (what, action)) = tracked(format!("delete machine {name}"), create, move || {
        Box::pin(async move { s.machine_delete(&n).await })
    });
    undo.push(what, action);
    handle.await??;
    Ok(Guest::Smolvm {
        smolvm,
        machine: name,
    })
}
