//! The config component: the daemons' config files, the guest and bundle specs, and the
//! provisioning files, all rendered from a [`ConfigKey`].
//!
//! Rendering is a pure function of the key (and [`crate::hash::CONFIG_FORMAT`] versions its
//! shape), so a config component is checked by rendering its key again: `verify` and `run`
//! refuse a `guest.json` that says `root` where the key says `node`. The provisioning files
//! (prompt, skills) are copies of recipe files whose digests the key holds.
//!
//! Everything here holds no secret: token env vars appear by name, identity keys by host
//! path. Paths inside the bundle and the guest are fixed here, in one place; the CA files are
//! minted per run on the machine that runs (`run::ca`) and mounted from the run's folder.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::digest::Digest;
use crate::hash::ConfigKey;
use crate::manifest::{
    BUNDLE_IP_TEMPLATE, BundleSpec, GuestSpec, Mount, MountSource, ProvisionSpec,
};

pub const PIPELOCK_PORT: u16 = 8888;
pub const EGRESS_PORT: u16 = 9999;
pub const GIT_GATE_PORT: u16 = 9418;
pub const SUPERVISE_PORT: u16 = 7777;

/// Where the guest finds the run's CA; the trust trio points here.
pub const GUEST_CA_PATH: &str = "/etc/bottle/ca.crt";

const BUNDLE_ETC: &str = "/etc/bottle";
const SUPERVISE_QUEUE: &str = "/var/lib/bottle/supervise";

/// Paths of the config component's files.
pub mod paths {
    pub const GUEST_SPEC: &str = "guest.json";
    pub const BUNDLE_SPEC: &str = "bundle.json";
    pub const PIPELOCK_CONFIG: &str = "pipelock.json";
    pub const EGRESS_CONFIG: &str = "egress.json";
    pub const GIT_GATE_CONFIG: &str = "git-gate.json";
    pub const GIT_GATE_HOOK: &str = "git-gate/pre-receive";
    pub const SUPERVISE_CONFIG: &str = "supervise.json";
    pub const PROMPT: &str = "provision/prompt.md";
    pub const SKILLS: &str = "provision/skills";
}

/// File names in a run's CA folder (see `run::ca`).
pub mod ca_files {
    pub const PIPELOCK_CERT: &str = "pipelock.crt";
    pub const PIPELOCK_KEY: &str = "pipelock.key";
    pub const EGRESS_CERT: &str = "egress.crt";
    pub const EGRESS_KEY: &str = "egress.key";
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
    files.extend(daemon_configs(key));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Rendered {
        guest,
        bundle,
        files,
    }
}

/// The provisioning files the component holds: (component path, digest of the recipe file
/// it is a copy of).
pub fn provision_files(key: &ConfigKey) -> Vec<(String, Digest)> {
    let mut out = Vec::new();
    if let Some(d) = key.provision.prompt {
        out.push((paths::PROMPT.to_string(), d));
    }
    for (rel, d) in key.provision.skills.iter().flatten() {
        if let Some(digest) = d.file_digest() {
            out.push((format!("{}/{rel}", paths::SKILLS), digest));
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

fn daemon_configs(key: &ConfigKey) -> Vec<RenderedFile> {
    let routes = &key.egress.routes;
    let pipelock = json!({
        "listen_port": PIPELOCK_PORT,
        "allow": key.pipelock.allow,
        "dlp": key.pipelock.dlp,
        "ca_cert": format!("{BUNDLE_ETC}/ca/{}", ca_files::PIPELOCK_CERT),
        "ca_key": format!("{BUNDLE_ETC}/ca/{}", ca_files::PIPELOCK_KEY),
        // Route hosts go through egress, which swaps in the real credential.
        "egress_hosts": routes.iter().map(|r| r.host.clone()).collect::<Vec<_>>(),
        "egress_proxy": format!("127.0.0.1:{EGRESS_PORT}"),
        "audit_log": "/var/log/bottle/pipelock.jsonl",
    });
    let egress_ca = |f: &str| (!routes.is_empty()).then(|| format!("{BUNDLE_ETC}/ca/{f}"));
    let egress = json!({
        "listen": format!("127.0.0.1:{EGRESS_PORT}"),
        "routes": routes.iter().map(|r| json!({
            "host": r.host,
            "token_env": r.token_env,
            "header": r.header,
            "scheme": r.scheme,
        })).collect::<Vec<_>>(),
        "ca_cert": egress_ca(ca_files::EGRESS_CERT),
        "ca_key": egress_ca(ca_files::EGRESS_KEY),
        "upstream_proxy": format!("http://127.0.0.1:{PIPELOCK_PORT}"),
        "upstream_ca": format!("{BUNDLE_ETC}/ca/{}", ca_files::PIPELOCK_CERT),
    });
    let mut files = vec![
        json_file(paths::PIPELOCK_CONFIG, &pipelock),
        json_file(paths::EGRESS_CONFIG, &egress),
    ];
    if !key.git_gate.upstreams.is_empty() {
        let gate = json!({
            "port": GIT_GATE_PORT,
            "hook": format!("{BUNDLE_ETC}/git-gate/pre-receive"),
            "upstreams": key.git_gate.upstreams.iter().map(|u| json!({
                "name": u.name,
                "url": u.url,
                "identity": format!("{BUNDLE_ETC}/git-gate/keys/{}", u.name),
            })).collect::<Vec<_>>(),
        });
        files.push(json_file(paths::GIT_GATE_CONFIG, &gate));
        files.push(RenderedFile {
            path: paths::GIT_GATE_HOOK.to_string(),
            bytes: GIT_GATE_HOOK.as_bytes().to_vec(),
            mode: 0o755,
        });
    }
    if key.supervise.enabled {
        files.push(json_file(
            paths::SUPERVISE_CONFIG,
            &json!({ "port": SUPERVISE_PORT, "queue": SUPERVISE_QUEUE }),
        ));
    }
    files
}

/// The git-gate pre-receive hook: refuses branch deletions and history rewrites.
const GIT_GATE_HOOK: &str = r#"#!/bin/sh
# bottle git-gate pre-receive hook: an agent may add commits, never delete or rewrite.
zero=0000000000000000000000000000000000000000
status=0
while read -r old new ref; do
  if [ "$new" = "$zero" ]; then
    echo "git-gate: refusing to delete $ref" >&2; status=1; continue
  fi
  if [ "$old" != "$zero" ] && ! git merge-base --is-ancestor "$old" "$new"; then
    echo "git-gate: refusing a non-fast-forward push to $ref" >&2; status=1
  fi
done
exit $status
"#;

/// Which daemons run, their env and mounts.
fn bundle_spec(key: &ConfigKey) -> BundleSpec {
    let mut daemons = vec!["egress".to_string(), "pipelock".to_string()];
    let mut env = vec!["EGRESS_LISTEN_HOST=127.0.0.1".to_string()];
    let mut env_from_host = Vec::new();
    let config = |src: &str, target: String| Mount {
        source: MountSource::Config(src.to_string()),
        target,
        read_only: true,
    };
    let ca = |file: &str| Mount {
        source: MountSource::Ca(file.to_string()),
        target: format!("{BUNDLE_ETC}/ca/{file}"),
        read_only: true,
    };
    let mut mounts = vec![
        config(
            paths::PIPELOCK_CONFIG,
            format!("{BUNDLE_ETC}/pipelock.json"),
        ),
        ca(ca_files::PIPELOCK_CERT),
        ca(ca_files::PIPELOCK_KEY),
        config(paths::EGRESS_CONFIG, format!("{BUNDLE_ETC}/egress.json")),
    ];
    let mut ports = BTreeMap::from([
        ("pipelock".to_string(), PIPELOCK_PORT),
        ("egress".to_string(), EGRESS_PORT),
    ]);
    if !key.egress.routes.is_empty() {
        env.push(format!(
            "EGRESS_UPSTREAM_PROXY=http://127.0.0.1:{PIPELOCK_PORT}"
        ));
        env.push(format!(
            "EGRESS_UPSTREAM_CA={BUNDLE_ETC}/ca/{}",
            ca_files::PIPELOCK_CERT
        ));
        mounts.push(ca(ca_files::EGRESS_CERT));
        mounts.push(ca(ca_files::EGRESS_KEY));
        env_from_host = key
            .egress
            .routes
            .iter()
            .map(|r| r.token_env.clone())
            .collect();
        env_from_host.sort();
        env_from_host.dedup();
    }
    if !key.git_gate.upstreams.is_empty() {
        daemons.push("git-gate".to_string());
        mounts.push(config(
            paths::GIT_GATE_CONFIG,
            format!("{BUNDLE_ETC}/git-gate.json"),
        ));
        mounts.push(config(
            paths::GIT_GATE_HOOK,
            format!("{BUNDLE_ETC}/git-gate/pre-receive"),
        ));
        for u in &key.git_gate.upstreams {
            mounts.push(Mount {
                source: MountSource::Host(u.identity.clone()),
                target: format!("{BUNDLE_ETC}/git-gate/keys/{}", u.name),
                read_only: true,
            });
        }
        ports.insert("git-gate".to_string(), GIT_GATE_PORT);
    }
    if key.supervise.enabled {
        daemons.push("supervise".to_string());
        env.push(format!("SUPERVISE_QUEUE_DIR={SUPERVISE_QUEUE}"));
        env.push(format!("SUPERVISE_PORT={SUPERVISE_PORT}"));
        mounts.push(config(
            paths::SUPERVISE_CONFIG,
            format!("{BUNDLE_ETC}/supervise.json"),
        ));
        mounts.push(Mount {
            source: MountSource::RunDir("supervise".to_string()),
            target: SUPERVISE_QUEUE.to_string(),
            read_only: false,
        });
        ports.insert("supervise".to_string(), SUPERVISE_PORT);
    }
    BundleSpec {
        daemons,
        env,
        env_from_host,
        mounts,
        ports,
    }
}

/// The whole guest env: the recipe's entries plus the bottle's fixed ones (see
/// [`crate::plan::FIXED_GUEST_ENV`]). The proxy address is a template filled at run time.
fn guest_env(key: &ConfigKey) -> BTreeMap<String, String> {
    let g = &key.guest;
    let proxy = format!("http://{BUNDLE_IP_TEMPLATE}:{PIPELOCK_PORT}");
    let mut env = g.env.clone();
    let fixed = [
        ("CLAUDE_CODE_OAUTH_TOKEN", "egress-placeholder".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("HTTPS_PROXY", proxy.clone()),
        ("HTTP_PROXY", proxy.clone()),
        ("https_proxy", proxy.clone()),
        ("http_proxy", proxy),
        ("NO_PROXY", "localhost,127.0.0.1".to_string()),
        ("no_proxy", "localhost,127.0.0.1".to_string()),
        ("NODE_EXTRA_CA_CERTS", GUEST_CA_PATH.to_string()),
        ("SSL_CERT_FILE", GUEST_CA_PATH.to_string()),
        ("REQUESTS_CA_BUNDLE", GUEST_CA_PATH.to_string()),
        ("HOME", g.home.clone()),
        ("USER", g.user.clone()),
    ];
    debug_assert_eq!(fixed.len(), crate::plan::FIXED_GUEST_ENV.len());
    for (k, v) in fixed {
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
            git_remotes: key
                .git_gate
                .upstreams
                .iter()
                .map(|u| u.name.clone())
                .collect(),
            supervise: key.supervise.enabled,
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
