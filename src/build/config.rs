//! The daemons' config files, and the specs the run phase consumes.
//!
//! Everything here is derived from the plan alone and holds no secret: token env vars appear
//! by name, identity keys by host path. Paths inside the bundle and the guest are fixed here,
//! in one place.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::manifest::{
    BUNDLE_IP_TEMPLATE, BundleSpec, GuestSpec, Mount, MountSource, ProvisionSpec,
};
use crate::plan::{GuestStart, Plan};

pub const PIPELOCK_PORT: u16 = 8888;
pub const EGRESS_PORT: u16 = 9999;
pub const GIT_GATE_PORT: u16 = 9418;
pub const SUPERVISE_PORT: u16 = 7777;

/// Where the guest finds the CA it trusts; the trust trio points here.
pub const GUEST_CA_PATH: &str = "/etc/bottle/ca.crt";

const BUNDLE_ETC: &str = "/etc/bottle";
const SUPERVISE_QUEUE: &str = "/var/lib/bottle/supervise";

/// Entry paths of the artifacts this module and the CA step write.
pub mod paths {
    pub const PIPELOCK_CONFIG: &str = "config/pipelock.json";
    pub const EGRESS_CONFIG: &str = "config/egress.json";
    pub const GIT_GATE_CONFIG: &str = "config/git-gate.json";
    pub const GIT_GATE_HOOK: &str = "config/git-gate/pre-receive";
    pub const SUPERVISE_CONFIG: &str = "config/supervise.json";
    pub const CA_DIR: &str = "ca";
    pub const PIPELOCK_CA: &str = "ca/pipelock.crt";
    pub const PIPELOCK_KEY: &str = "ca/pipelock.key";
    pub const EGRESS_CA: &str = "ca/egress.crt";
    pub const EGRESS_KEY: &str = "ca/egress.key";
    pub const IMAGE_ARCHIVE: &str = "guest/image.tar";
    pub const PACK: &str = "guest/guest.smolmachine";
    pub const BUNDLE_IMAGE_ARCHIVE: &str = "bundle/image.tar";
    pub const PROMPT: &str = "provision/prompt.md";
    pub const SKILLS: &str = "provision/skills";
}

/// Writes every daemon config file of the plan under `entry`.
pub fn write_configs(plan: &Plan, entry: &Path) -> Result<()> {
    let pipelock = json!({
        "listen_port": PIPELOCK_PORT,
        "allow": plan.pipelock.allow,
        "dlp": plan.pipelock.dlp,
        "ca_cert": format!("{BUNDLE_ETC}/ca/pipelock.crt"),
        "ca_key": format!("{BUNDLE_ETC}/ca/pipelock.key"),
        // Route hosts go through egress, which swaps in the real credential.
        "egress_hosts": plan.egress.routes.iter().map(|r| r.host.clone()).collect::<Vec<_>>(),
        "egress_proxy": format!("127.0.0.1:{EGRESS_PORT}"),
        "audit_log": "/var/log/bottle/pipelock.jsonl",
    });
    write_json(entry, paths::PIPELOCK_CONFIG, &pipelock)?;

    let egress = json!({
        "listen": format!("127.0.0.1:{EGRESS_PORT}"),
        "routes": plan.egress.routes.iter().map(|r| json!({
            "host": r.host,
            "token_env": r.token_env,
            "header": r.header,
            "scheme": r.scheme,
        })).collect::<Vec<_>>(),
        "ca_cert": if plan.egress.routes.is_empty() { None } else { Some(format!("{BUNDLE_ETC}/ca/egress.crt")) },
        "ca_key": if plan.egress.routes.is_empty() { None } else { Some(format!("{BUNDLE_ETC}/ca/egress.key")) },
        "upstream_proxy": format!("http://127.0.0.1:{PIPELOCK_PORT}"),
        "upstream_ca": format!("{BUNDLE_ETC}/ca/pipelock.crt"),
    });
    write_json(entry, paths::EGRESS_CONFIG, &egress)?;

    if !plan.git_gate.upstreams.is_empty() {
        let gate = json!({
            "port": GIT_GATE_PORT,
            "hook": format!("{BUNDLE_ETC}/git-gate/pre-receive"),
            "upstreams": plan.git_gate.upstreams.iter().map(|u| json!({
                "name": u.name,
                "url": u.url,
                "identity": format!("{BUNDLE_ETC}/git-gate/keys/{}", u.name),
            })).collect::<Vec<_>>(),
        });
        write_json(entry, paths::GIT_GATE_CONFIG, &gate)?;
        write_file(entry, paths::GIT_GATE_HOOK, GIT_GATE_HOOK.as_bytes(), 0o755)?;
    }
    if plan.supervise.enabled {
        write_json(
            entry,
            paths::SUPERVISE_CONFIG,
            &json!({ "port": SUPERVISE_PORT, "queue": SUPERVISE_QUEUE }),
        )?;
    }
    Ok(())
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

/// The bundle image, which daemons run, their env and mounts.
pub fn bundle_spec(plan: &Plan, image_id: String) -> BundleSpec {
    let mut daemons = vec!["egress".to_string(), "pipelock".to_string()];
    let mut env = vec!["EGRESS_LISTEN_HOST=127.0.0.1".to_string()];
    let mut env_from_host = Vec::new();
    let entry = |src: &str, target: String| Mount {
        source: MountSource::Entry(src.to_string()),
        target,
        read_only: true,
    };
    let mut mounts = vec![
        entry(
            paths::PIPELOCK_CONFIG,
            format!("{BUNDLE_ETC}/pipelock.json"),
        ),
        entry(paths::PIPELOCK_CA, format!("{BUNDLE_ETC}/ca/pipelock.crt")),
        entry(paths::PIPELOCK_KEY, format!("{BUNDLE_ETC}/ca/pipelock.key")),
        entry(paths::EGRESS_CONFIG, format!("{BUNDLE_ETC}/egress.json")),
    ];
    let mut ports = BTreeMap::from([
        ("pipelock".to_string(), PIPELOCK_PORT),
        ("egress".to_string(), EGRESS_PORT),
    ]);
    if !plan.egress.routes.is_empty() {
        env.push(format!(
            "EGRESS_UPSTREAM_PROXY=http://127.0.0.1:{PIPELOCK_PORT}"
        ));
        env.push(format!("EGRESS_UPSTREAM_CA={BUNDLE_ETC}/ca/pipelock.crt"));
        mounts.push(entry(
            paths::EGRESS_CA,
            format!("{BUNDLE_ETC}/ca/egress.crt"),
        ));
        mounts.push(entry(
            paths::EGRESS_KEY,
            format!("{BUNDLE_ETC}/ca/egress.key"),
        ));
        env_from_host = plan
            .egress
            .routes
            .iter()
            .map(|r| r.token_env.clone())
            .collect();
        env_from_host.sort();
        env_from_host.dedup();
    }
    if !plan.git_gate.upstreams.is_empty() {
        daemons.push("git-gate".to_string());
        mounts.push(entry(
            paths::GIT_GATE_CONFIG,
            format!("{BUNDLE_ETC}/git-gate.json"),
        ));
        mounts.push(entry(
            paths::GIT_GATE_HOOK,
            format!("{BUNDLE_ETC}/git-gate/pre-receive"),
        ));
        for u in &plan.git_gate.upstreams {
            mounts.push(Mount {
                source: MountSource::Host(u.identity.clone()),
                target: format!("{BUNDLE_ETC}/git-gate/keys/{}", u.name),
                read_only: true,
            });
        }
        ports.insert("git-gate".to_string(), GIT_GATE_PORT);
    }
    if plan.supervise.enabled {
        daemons.push("supervise".to_string());
        env.push(format!("SUPERVISE_QUEUE_DIR={SUPERVISE_QUEUE}"));
        env.push(format!("SUPERVISE_PORT={SUPERVISE_PORT}"));
        mounts.push(entry(
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
        image_archive: paths::BUNDLE_IMAGE_ARCHIVE.to_string(),
        image_id,
        daemons,
        env,
        env_from_host,
        mounts,
        ports,
    }
}

/// The whole guest env: the recipe's entries plus the bottle's fixed ones (see
/// [`crate::plan::FIXED_GUEST_ENV`]). The proxy address is a template filled at run time.
pub fn guest_env(plan: &Plan) -> BTreeMap<String, String> {
    let g = &plan.guest;
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

pub fn guest_spec(plan: &Plan, image_id: String) -> GuestSpec {
    let g = &plan.guest;
    GuestSpec {
        backend: g.backend,
        start: g.start,
        image_archive: paths::IMAGE_ARCHIVE.to_string(),
        image_id,
        pack: (g.start == GuestStart::Pack).then(|| paths::PACK.to_string()),
        user: g.user.clone(),
        home: g.home.clone(),
        command: g.command.clone(),
        env: guest_env(plan),
        ca: paths::PIPELOCK_CA.to_string(),
        ca_guest_path: GUEST_CA_PATH.to_string(),
        provision: ProvisionSpec {
            prompt: plan
                .provision
                .prompt
                .as_ref()
                .map(|_| paths::PROMPT.to_string()),
            skills: plan
                .provision
                .skills
                .as_ref()
                .map(|_| paths::SKILLS.to_string()),
            git_name: plan.provision.git_name.clone(),
            git_email: plan.provision.git_email.clone(),
            git_remotes: plan
                .git_gate
                .upstreams
                .iter()
                .map(|u| u.name.clone())
                .collect(),
            supervise: plan.supervise.enabled,
        },
    }
}

fn write_json(entry: &Path, rel: &str, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_file(entry, rel, &text, 0o644)
}

pub fn write_file(entry: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let path = entry.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::build::ca::write_mode(&path, bytes, mode)
}
