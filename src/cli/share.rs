//! `bottle push`, `bottle pull` and `bottle key generate`: sharing entries through caches.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Global, Outcome, human_bytes, out, print_json};
use crate::hash::BuildHash;
use crate::share::pull::Trust;
use crate::share::settings::Settings;
use crate::share::{Cache, CacheUrl, PublicKey, SecretKey, ShareError, pull, push};
use crate::store::Store;

/// A byte bar with the rate on a terminal; hidden otherwise (a summary line follows).
fn bar(g: &Global, what: &str) -> ProgressBar {
    if g.quiet > 0 || g.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn open_cache(url: &str, settings: &Settings) -> Result<Cache> {
    let url = CacheUrl::parse(url)?;
    Ok(Cache::open(&url, &settings.s3)?)
}

pub async fn push(
    g: &Global,
    store: &Store,
    hash: &str,
    to: &str,
    sign_key: Option<&Path>,
) -> Result<Outcome> {
    let hash = store.resolve(hash)?;
    let r = push_entry(g, store, &hash, to, sign_key).await?;
    if g.json {
        print_json(&serde_json::to_value(&r)?)?;
    } else {
        out(hash)?;
    }
    Ok(Outcome::Success)
}

/// Pushes an entry the store has, signed with `sign_key`, else BOTTLE_SECRET_KEY_FILE, else
/// the config's secret-key-file; says on stderr what it moved. `bottle push` and `bottle
/// build --push`.
pub async fn push_entry(
    g: &Global,
    store: &Store,
    hash: &BuildHash,
    to: &str,
    sign_key: Option<&Path>,
) -> Result<push::PushReport> {
    let settings = Settings::load(g.config.as_deref())?;
    let cache = open_cache(to, &settings)?;
    let key = match sign_key.or(settings.secret_key_file.as_deref()) {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret key file {}", path.display()))?;
            Some(SecretKey::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let bar = bar(g, "push");
    let r = push::push(store, &cache, hash, key.as_ref(), &bar).await;
    bar.finish_and_clear();
    let r = r?;
    if g.quiet == 0 {
        if key.is_none() {
            eprintln!(
                "warning: pushed unsigned (no --sign-key, BOTTLE_SECRET_KEY_FILE or secret-key-file): pulls refuse it unless they pass --no-check-sigs"
            );
        }
        eprintln!(
            "bottle push: {} of 3 components, {} chunks uploaded ({}), {} the cache had; entry {} to {}",
            r.components.len(),
            r.chunks_uploaded,
            human_bytes(r.bytes_uploaded),
            r.chunks_present,
            human_bytes(r.entry_bytes),
            cache.url()
        );
    }
    Ok(r)
}

/// The keys a pull trusts: `--trust`, and BOTTLE_TRUSTED_PUBLIC_KEYS or the config's.
fn trusted(flags: &[String], settings: &Settings) -> Result<Vec<PublicKey>> {
    let mut keys = settings.trusted_public_keys.clone();
    for t in flags {
        keys.push(PublicKey::parse(t, "--trust")?);
    }
    Ok(keys)
}

/// Pulls an entry the store lacks from the configured substituters, in order, as Nix
/// substitutes; says why each one that has it could not serve it. Whether it was pulled.
pub async fn substitute(g: &Global, store: &Store, hash: &BuildHash) -> Result<bool> {
    if store.contains(hash) {
        return Ok(false);
    }
    let settings = Settings::load(g.config.as_deref())?;
    let trust = Trust {
        keys: settings.trusted_public_keys.clone(),
        unsigned_ok: false,
    };
    for url in &settings.substituters {
        let cache = Cache::open(url, &settings.s3)?;
        let bar = bar(g, "pull");
        let r = pull_on_a_worker(store, cache, *hash, trust.clone(), &bar).await;
        bar.finish_and_clear();
        match r {
            Ok(r) => {
                if g.quiet == 0 {
                    eprintln!(
                        "bottle: pulled {} from {url} ({} downloaded, signed by {})",
                        hash.short(),
                        human_bytes(r.bytes_downloaded),
                        r.signed_by.as_deref().unwrap_or("?")
                    );
                }
                return Ok(true);
            }
            Err(ShareError::NotInCache { .. }) => {
                tracing::debug!("{url} does not have {hash}");
            }
            Err(e) => {
                if g.quiet == 0 {
                    eprintln!("warning: substituter {url}: {:#}", anyhow::Error::from(e));
                }
            }
        }
    }
    Ok(false)
}

/// [`pull::pull`] as a task of the runtime's workers rather than on the thread that waits for
/// the command: the connections it reads from are tasks of the same workers, so a chunk's
/// arrival wakes no other thread (`benches/share_pull.sh`: a 512 MiB pull about 5% faster).
async fn pull_on_a_worker(
    store: &Store,
    cache: Cache,
    hash: BuildHash,
    trust: Trust,
    bar: &ProgressBar,
) -> Result<pull::PullReport, ShareError> {
    let (store, bar) = (store.clone(), bar.clone());
    tokio::spawn(async move { pull::pull(&store, &cache, &hash, &trust, &bar).await })
        .await
        .expect("a pull does not panic")
}

pub async fn pull(
    g: &Global,
    store: &Store,
    hash: &str,
    from: &str,
    trust: &[String],
    no_check_sigs: bool,
) -> Result<Outcome> {
    let Some(hash) = BuildHash::parse(hash.trim()) else {
        bail!(
            "{hash:?} is not an entry's full hash (64 hex digits): a pull names the entry exactly"
        );
    };
    let settings = Settings::load(g.config.as_deref())?;
    let cache = open_cache(from, &settings)?;
    let trust = Trust {
        keys: trusted(trust, &settings)?,
        unsigned_ok: no_check_sigs,
    };
    let bar = bar(g, "pull");
    let r = pull_on_a_worker(store, cache, hash, trust, &bar).await;
    bar.finish_and_clear();
    let r = r?;
    if g.json {
        print_json(&serde_json::to_value(&r)?)?;
    } else {
        if r.present {
            eprintln!("bottle pull: the store has {} already", hash.short());
        } else {
            eprintln!(
                "bottle pull: {} components, {} chunks downloaded ({}), {} found on this machine; signed by {}",
                r.components.len(),
                r.chunks_downloaded,
                human_bytes(r.bytes_downloaded),
                r.chunks_local,
                r.signed_by
                    .as_deref()
                    .unwrap_or("no trusted key (--no-check-sigs)")
            );
        }
        out(hash)?;
    }
    Ok(Outcome::Success)
}

pub fn key_generate(g: &Global, name: &str, dir: &Path) -> Result<Outcome> {
    let key = SecretKey::generate(name)?;
    let (sec, public) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    for p in [&sec, &public] {
        if p.exists() {
            bail!(
                "{} exists; remove it or choose another name or --out",
                p.display()
            );
        }
    }
    crate::files::write_new(&sec, format!("{}\n", key.to_line()).as_bytes(), 0o600)?;
    let line = key.public().to_line();
    crate::files::write_new(&public, format!("{line}\n").as_bytes(), 0o644)?;
    if g.quiet == 0 {
        eprintln!(
            "bottle key: wrote {} (secret, mode 0600) and {}",
            sec.display(),
            public.display()
        );
    }
    out(line)?;
    Ok(Outcome::Success)
}

/// `bottle gc --remote URL`: keeps the entries given (full hashes), or all of them.
pub async fn gc_remote(g: &Global, url: &str, keep: &[String], dry_run: bool) -> Result<Outcome> {
    let settings = Settings::load(g.config.as_deref())?;
    let cache = open_cache(url, &settings)?;
    let keep = keep
        .iter()
        .map(|k| {
            BuildHash::parse(k.trim()).with_context(|| {
                format!(
                    "--keep {k:?}: a remote gc keeps entries by their full hash (64 hex digits)"
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let keep = (!keep.is_empty()).then_some(keep.as_slice());
    let r = crate::share::gc::gc(&cache, keep, dry_run).await?;
    if g.json {
        print_json(&serde_json::to_value(&r)?)?;
        return Ok(Outcome::Success);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for h in &r.removed_entries {
        out(format!("{verb} entry {h}"))?;
    }
    out(format!(
        "{verb} {} entries, {} components, {} chunks from {}; {} entries kept",
        r.removed_entries.len(),
        r.removed_components,
        r.removed_chunks,
        cache.url(),
        r.kept.len()
    ))?;
    Ok(Outcome::Success)
}
