//! Rendering a config key: the guest and bundle specs, and every file of the component.

use std::collections::BTreeMap;

use super::daemons;
use super::files::{GUEST_CA_PATH, RenderedFile, json_file, paths};
use crate::daemons::{Daemon, egress, pipelock, supervise};
use crate::digest::Digest;
use crate::hash::ConfigKey;
use crate::manifest::{BUNDLE_IP_TEMPLATE, BundleSpec, GuestSpec, ProvisionSpec, WorkspaceSpec};
use crate::plan::{FIXED_GUEST_ENV, FixedValue};

/// What a config key renders to.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub guest: GuestSpec,
    pub bundle: BundleSpec,
    /// Every rendered file (the specs included), sorted by path.
    pub files: Vec<RenderedFile>,
}

/// Renders a config key: specs and daemon configs.
pub fn render(key: &ConfigKey) -> Rendered {
    let guest = guest_spec(key);
    let bundle = bundle_spec(key);
    let mut files = vec![
        json_file(paths::GUEST_SPEC, &guest),
        json_file(paths::BUNDLE_SPEC, &bundle),
    ];
    files.extend(daemons::config_files(key));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Rendered {
        guest,
        bundle,
        files,
    }
}

/// The files the component holds as copies of recipe files: (component path, digest of the
/// recipe file it copies). The prompt, each skills file, each route's upstream CA.
pub fn copied_files(key: &ConfigKey) -> Vec<(String, Digest)> {
    let mut out = Vec::new();
    if let Some(d) = key.provision.prompt {
        out.push((paths::PROMPT.to_string(), d));
    }
    for (rel, d) in key.provision.skills.iter().flatten() {
        if let Some(digest) = d.file_digest() {
            out.push((format!("{}/{rel}", paths::SKILLS), digest));
        }
    }
    for (guest, d) in &key.provision.files {
        out.push((format!("{}/{guest}", paths::FILES), *d));
    }
    for r in &key.egress.routes {
        if let Some(d) = r.upstream_ca {
            out.push((egress::upstream_ca_file(&r.host), d));
        }
    }
    out
}

/// Which daemons run, with what env, mounts and secrets, on which ports.
fn bundle_spec(key: &ConfigKey) -> BundleSpec {
    let daemons = daemons::daemons(key);
    let (mounts, env, secrets) = daemons::bundle_needs(key);
    let ports: BTreeMap<Daemon, u16> = daemons
        .iter()
        .filter_map(|d| Some((*d, d.port()?)))
        .collect();
    BundleSpec {
        daemons,
        env,
        secrets,
        mounts,
        ports,
        hosts: key.network.hosts.clone(),
        memory: key.bundle.memory,
    }
}

/// The whole guest env: the recipe's entries plus the bottle's fixed ones (see
/// [`FIXED_GUEST_ENV`]) and a placeholder under each route's token name. The
/// proxy address is a template filled at run time. When supervise runs, its URL is
/// `BOTTLE_SUPERVISE_URL` and the bundle's address is in `NO_PROXY`: the guest talks to it
/// directly, not through pipelock.
fn guest_env(key: &ConfigKey) -> BTreeMap<String, String> {
    let g = &key.guest;
    let proxy = format!("http://{BUNDLE_IP_TEMPLATE}:{}", pipelock::PORT);
    let supervise = key.supervise.enabled;
    let no_proxy = if supervise {
        format!("localhost,127.0.0.1,{BUNDLE_IP_TEMPLATE}")
    } else {
        "localhost,127.0.0.1".to_string()
    };
    let mut env = g.env.clone();
    for r in &key.egress.routes {
        env.insert(r.token_env.clone(), egress::PLACEHOLDER.to_string());
    }
    for (name, value) in FIXED_GUEST_ENV {
        let value = match value {
            FixedValue::Placeholder => egress::PLACEHOLDER.to_string(),
            FixedValue::On => "1".to_string(),
            FixedValue::Proxy => proxy.clone(),
            FixedValue::NoProxy => no_proxy.clone(),
            FixedValue::CaPath => GUEST_CA_PATH.to_string(),
            FixedValue::Home => g.home.clone(),
            FixedValue::User => g.user.clone(),
            FixedValue::SuperviseUrl if supervise => supervise::url(BUNDLE_IP_TEMPLATE),
            FixedValue::SuperviseUrl => continue,
        };
        env.insert(name.to_string(), value);
    }
    env
}

fn guest_spec(key: &ConfigKey) -> GuestSpec {
    let g = &key.guest;
    let p = &key.provision;
    GuestSpec {
        user: g.user.clone(),
        home: g.home.clone(),
        command: g.command.clone(),
        env: guest_env(key),
        ca_guest_path: GUEST_CA_PATH.to_string(),
        provision: ProvisionSpec {
            prompt: p.prompt.map(|_| paths::PROMPT.to_string()),
            skills: p.skills.as_ref().map(|_| paths::SKILLS.to_string()),
            git_name: p.git_name.clone(),
            git_email: p.git_email.clone(),
            files: p
                .files
                .keys()
                .map(|guest| (guest.clone(), format!("{}/{guest}", paths::FILES)))
                .collect(),
            workspace: p.workspace.as_ref().map(|upstream| WorkspaceSpec {
                upstream: upstream.clone(),
                dir: format!(
                    "{}/{}",
                    g.home.trim_end_matches('/'),
                    crate::plan::WORKSPACE_DIR
                ),
            }),
        },
    }
}
