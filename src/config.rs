//! The config component: the daemons' config files, the guest and bundle specs, and the
//! provisioning files, all rendered from a [`ConfigKey`].
//!
//! Rendering is a pure function of the key (and [`crate::hash::CONFIG_FORMAT`] versions its
//! shape), so a config component is checked by rendering its key again: `verify` and `run`
//! refuse a `guest.json` that says `root` where the key says `node`. The provisioning files
//! (prompt, skills) are copies of recipe files whose digests the key holds.
//!
//! Everything here holds no secret: token env vars appear by name, identity keys by host
//! path. Each daemon's config file, port and mounts come from its module through the registry
//! (`sidecar::daemon`); the CA files are minted per run on the machine that runs (`run::ca`)
//! and mounted from the run's folder.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::Digest;
use crate::hash::ConfigKey;
use crate::manifest::{BUNDLE_IP_TEMPLATE, BundleSpec, GuestSpec, ProvisionSpec, WorkspaceSpec};
use crate::bundle::daemon::{self, Daemon};
use crate::bundle::{egress, pipelock, supervise};

/// Where the guest finds the run's CA; the trust trio points here.
pub const GUEST_CA_PATH: &str = "/etc/bottle/ca.crt";

/// Paths of the config component's files besides the daemons' (whose files their modules
/// name: `pipelock.json`, ...).
pub mod paths {
    pub const GUEST_SPEC: &str = "guest.json";
    pub const BUNDLE_SPEC: &str = "bundle.json";
    pub const PROMPT: &str = "provision/prompt.md";
    pub const SKILLS: &str = "provision/skills";
    /// `[provision] files`, each at its guest path under this folder.
    pub const FILES: &str = "provision/files";
}

/// File names in a run's CA folder (see `run::ca`).
pub mod ca_files {
    pub const PIPELOCK_CERT: &str = "pipelock.crt";
    pub const PIPELOCK_KEY: &str = "pipelock.key";
}

/// One rendered file of the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

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
    files.extend(daemon::config_files(key));
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

fn json_file(path: &str, value: &impl Serialize) -> RenderedFile {
    let mut bytes = serde_json::to_vec_pretty(value).expect("config values serialize");
    bytes.push(b'\n');
    RenderedFile {
        path: path.to_string(),
        bytes,
        mode: 0o644,
    }
}

/// Which daemons run, with what env, mounts and secrets, on which ports.
fn bundle_spec(key: &ConfigKey) -> BundleSpec {
    let daemons = daemon::daemons(key);
    let (mounts, env, secrets) = daemon::bundle_needs(key);
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
/// [`crate::plan::FIXED_GUEST_ENV`]) and a placeholder under each route's token name. The
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
    let fixed = [
        ("CLAUDE_CODE_OAUTH_TOKEN", egress::PLACEHOLDER.to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("HTTPS_PROXY", proxy.clone()),
        ("HTTP_PROXY", proxy.clone()),
        ("https_proxy", proxy.clone()),
        ("http_proxy", proxy),
        ("NO_PROXY", no_proxy.clone()),
        ("no_proxy", no_proxy),
        ("NODE_EXTRA_CA_CERTS", GUEST_CA_PATH.to_string()),
        ("SSL_CERT_FILE", GUEST_CA_PATH.to_string()),
        ("REQUESTS_CA_BUNDLE", GUEST_CA_PATH.to_string()),
        ("HOME", g.home.clone()),
        ("USER", g.user.clone()),
    ];
    let url = supervise.then(|| {
        let url = supervise::url(BUNDLE_IP_TEMPLATE);
        (supervise::URL_ENV, url)
    });
    debug_assert!(
        fixed
            .iter()
            .map(|(k, _)| *k)
            .chain([supervise::URL_ENV])
            .eq(crate::plan::FIXED_GUEST_ENV.iter().copied())
    );
    for (k, v) in fixed.into_iter().chain(url) {
        env.insert(k.to_string(), v);
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

/// The fields where two JSON documents differ, as `a.b.c` paths (for messages naming what
/// was edited in a spec).
pub fn differing_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", a, &mut fa);
    flatten("", b, &mut fb);
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect()
}

/// A JSON document as `path → leaf value` (objects flattened with `.`).
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}
