//! The `provision` step: what the guest gets before the agent starts — the run's CA (at the
//! trust-trio path, and in the guest's trust store when it has one), the prompt, the skills,
//! the git identity and remotes (pointing at the bundle's git-gate), the supervise client's
//! config, the recipe's extra files; then the user's files are given to the user. Once the
//! bundle is up too, the `workspace` step clones the recipe's workspace upstream through
//! git-gate into the folder the agent starts in.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::bundle::ca_dir;
use super::steps::Ctx;
use crate::config::ca_files;
use crate::config::daemon::{GuestPath, GuestSide};
use crate::config::daemons;
use crate::manifest::GuestSpec;
use crate::runtime::FileIn;
use crate::runtime::guest::Guest;

/// Where provisioned files go in the guest, relative to its home.
pub mod guest_paths {
    pub const PROMPT: &str = ".claude/CLAUDE.md";
    pub const SKILLS: &str = ".claude/skills";
    pub const GITCONFIG: &str = ".gitconfig";
    /// Where the CA also goes when the guest has a Debian-style trust store.
    pub const TRUST_STORE_CA: &str = "/usr/local/share/ca-certificates/bottle.crt";
}

/// What to provision: the files for the guest, and the guest paths to give to its user.
#[derive(Debug, Clone)]
pub struct Files {
    pub files: Vec<FileIn>,
    pub users: Vec<String>,
}

/// Writes the files into the guest (unless `early`, their upload started before the guest
/// did, is given: then waits for it), then runs the provisioning script as root.
pub async fn provision(
    ctx: &Ctx,
    guest: &Guest,
    env: &[(String, String)],
    files: Files,
    early: Option<tokio::task::JoinHandle<Result<()>>>,
) -> Result<()> {
    let g = ctx.entry.guest_spec();
    match early {
        Some(upload) => upload.await.context("the file upload task panicked")??,
        None => {
            let scratch = ctx.run_dir.join("provision");
            guest.put_files(&files.files, env, &scratch).await?
        }
    }
    let users = files.users;

    // As root: the CA into the guest's trust store when it has one; the files to the user.
    let script = r#"ca="$1"; owner="$2"; shift 2
if command -v update-ca-certificates >/dev/null 2>&1; then
  mkdir -p /usr/local/share/ca-certificates && cp "$ca" "$TRUST_CA" && update-ca-certificates >/dev/null 2>&1 || exit 3
elif [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cat "$ca" >> /etc/ssl/certs/ca-certificates.crt || exit 3
fi
if [ $# -gt 0 ]; then chown -R "$owner:$owner" "$@" || exit 4; fi"#
        .replace("$TRUST_CA", guest_paths::TRUST_STORE_CA);
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script,
        "provision".to_string(),
        g.ca_guest_path.clone(),
        g.user.clone(),
    ];
    cmd.extend(users);
    let out = guest.exec("0", None, env, &cmd).await?;
    match out.code {
        0 => Ok(()),
        3 => bail!(
            "cannot add the run's CA to the guest's trust store: {}",
            out.stderr.trim()
        ),
        4 => bail!(
            "cannot give the provisioned files to {}: {}",
            g.user,
            out.stderr.trim()
        ),
        code => bail!(
            "the provisioning script exited {code}: {}",
            out.stderr.trim()
        ),
    }
}

/// The files to write into the guest, and the guest paths to give to its user.
pub fn files(ctx: &Ctx, bundle_ip: Ipv4Addr) -> Result<Files> {
    let g = ctx.entry.guest_spec();
    let p = &g.provision;
    let home = g.home.trim_end_matches('/');
    let in_home = |rel: &str| format!("{home}/{rel}");
    let read = |path: &Path| -> Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut files: Vec<FileIn> = Vec::new();
    let mut put = |path: GuestPath, bytes: Vec<u8>| {
        files.push(FileIn {
            path: path.resolve(home),
            bytes,
            mode: 0o644,
        })
    };
    let rel = |p: &str| GuestPath::Home(p.to_string());
    // Owned by the guest user afterwards; the CA stays root's.
    let mut users: Vec<String> = Vec::new();
    let ca = read(&ca_dir(ctx).join(ca_files::PIPELOCK_CERT))?;
    put(GuestPath::Absolute(g.ca_guest_path.clone()), ca);
    if let Some(prompt) = &p.prompt {
        put(
            rel(guest_paths::PROMPT),
            read(&ctx.entry.config.path(prompt))?,
        );
        users.push(in_home(".claude"));
    }
    if let Some(skills) = &p.skills {
        let root = ctx.entry.config.path(skills);
        for ent in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let ent = ent.with_context(|| format!("cannot read {}", root.display()))?;
            if !ent.file_type().is_file() {
                continue;
            }
            let rel_path = ent.path().strip_prefix(&root).unwrap_or(ent.path());
            let guest_path = format!("{}/{}", guest_paths::SKILLS, rel_path.to_string_lossy());
            put(GuestPath::Home(guest_path), read(ent.path())?);
        }
        users.push(in_home(".claude"));
    }
    for (guest_rel, component_path) in &p.files {
        put(
            rel(guest_rel),
            read(&ctx.entry.config.path(component_path))?,
        );
        let top = guest_rel.split('/').next().unwrap_or(guest_rel);
        users.push(in_home(top));
    }
    if p.git_name.is_some() || p.git_email.is_some() {
        let mut text = String::from("# Written by bottle.\n[user]\n");
        if let Some(n) = &p.git_name {
            text.push_str(&format!("\tname = {}\n", git_quote(n)));
        }
        if let Some(e) = &p.git_email {
            text.push_str(&format!("\temail = {}\n", git_quote(e)));
        }
        put(rel(guest_paths::GITCONFIG), text.into_bytes());
        users.push(in_home(guest_paths::GITCONFIG));
    }
    // The daemons' own files: git-gate's remotes, supervise's client config.
    let side = GuestSide {
        bundle_ip,
        run_id: &ctx.names.run_id,
    };
    for f in daemons::guest_files(ctx.entry.config_key(), &side) {
        if let (true, GuestPath::Home(rel)) = (f.user_owned, &f.path) {
            let top = rel.split('/').next().unwrap_or(rel);
            users.push(in_home(top));
        }
        put(f.path, f.bytes);
    }
    users.sort();
    users.dedup();
    Ok(Files { files, users })
}

/// The folder the agent's command (and `bottle exec`) starts in: the workspace when the recipe
/// has one, else the home.
pub fn workdir(g: &GuestSpec) -> &str {
    match &g.provision.workspace {
        Some(w) => &w.dir,
        None => &g.home,
    }
}

/// The `workspace` step: as the guest's user, clones the workspace upstream through git-gate
/// (the remote of that name in the guest's git config) into the workspace folder, and checks
/// out the upstream's default branch. A folder that already holds a repository is kept.
pub async fn workspace(ctx: &Ctx, guest: &Guest, env: &[(String, String)]) -> Result<()> {
    let g = ctx.entry.guest_spec();
    let Some(w) = &g.provision.workspace else {
        return Ok(());
    };
    // An empty upstream has no HEAD: the clone is then an empty repository.
    let script = r#"dir="$1"; remote="$2"
command -v git >/dev/null 2>&1 || exit 3
[ -e "$dir/.git" ] && exit 0
git init -q "$dir" && cd "$dir" || exit 4
git fetch -q "$remote" || exit 5
if git remote set-head "$remote" --auto >/dev/null 2>&1; then
  head=$(git symbolic-ref -q --short "refs/remotes/$remote/HEAD") || exit 6
  git checkout -q -b "${head#"$remote"/}" "$head" || exit 6
fi"#;
    let cmd: Vec<String> = ["/bin/sh", "-c", script, "workspace", &w.dir, &w.upstream]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = guest.exec(&g.user, Some(&g.home), env, &cmd).await?;
    let err = out.stderr.trim();
    match out.code {
        0 => Ok(()),
        3 => bail!(
            "the guest has no git, which `[provision] workspace` needs to clone {:?}: add git to the guest image",
            w.upstream
        ),
        4 => bail!("cannot create the workspace {} in the guest: {err}", w.dir),
        5 => bail!(
            "cannot clone the workspace from git-gate's upstream {:?}: {err}; check the upstream (`bottle doctor`) and `bottle logs RUN`",
            w.upstream
        ),
        code => bail!("checking out the workspace {} exited {code}: {err}", w.dir),
    }
}

fn git_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
