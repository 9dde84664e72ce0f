//! What a hostile or careless cache cannot do to a pull, a push or a remote gc: make a pull's
//! memory follow what it serves (a chunk served as 1 GiB), leave components of a refused
//! entry behind (a signed config that fails its render check), make a store file setuid (a
//! signed record's mode), make gc delete outside the cache (an encoded `../` name), or break
//! a gc's lease (a dry run or a second gc while one works, then a push), or make a folder
//! cache's reader follow a symlink or block on a FIFO. The real binary and
//! the real Docker Engine; each case but the first on a folder cache, nginx and Garage on
//! loopback ([`Remote`]), one `#[test]` per server.
//!
//! Its own test binary, not a module of `tests/engine/`: it measures a pull's peak memory as
//! the `ru_maxrss` `wait4` reports, and a child a process spawns (vfork, then exec) starts with
//! its parent's peak resident memory as its own. In the engine harness, whose process other
//! tests had grown to ~300 MiB, the pull "peaked" there, over the 64 MiB bound; in a binary of
//! its own, the parent stays small.

#[allow(
    dead_code,
    unused_imports,
    reason = "the engine tests' support, of which this binary uses a part"
)]
mod support;

use std::path::Path;
use std::time::Duration;

use bottle::hash::ComponentKind;
use support::nginx::Nginx;
use support::share::*;
use support::*;

/// The most a pull may peak at, whatever the cache serves.
const PEAK_KIB: u64 = 64 << 10;

#[test]
fn a_chunk_served_as_a_gigabyte_is_refused_with_flat_memory_from_a_folder_and_nginx() {
    let nginx = Nginx::start();
    let src = TestContext::new("share-huge-src");
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    // The first chunk a pull into an empty store asks for.
    let (chunk, size) = first_chunk(&cache, &m, ComponentKind::Guest);
    let served = nginx.root().join("c");
    copy_tree(&cache, &served);
    let pull_from = |ctx: &TestContext, url: &str| {
        output_with_peak_rss(
            ctx.cmd(),
            &["pull", &hash, "--from", url, "--trust", &public],
        )
    };
    // A normal pull, for comparison (printed: the figure the bound is set against).
    let ok = TestContext::new("share-huge-ok");
    let (out, normal) = pull_from(&ok, &nginx.url("c"));
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("a normal pull over nginx peaked at {normal} KiB");
    for (dir, url) in [
        (cache.clone(), url(&cache)),
        (served.clone(), nginx.url("c")),
    ] {
        let good = std::fs::read(dir.join(&chunk)).unwrap();
        assert_eq!(good.len() as u64, size);
        plant_sparse(&dir.join(&chunk), 1 << 30);
        let dst = TestContext::new("share-huge-dst");
        let (out, peak) = pull_from(&dst, &url);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(
            peak < PEAK_KIB,
            "{url}: the pull peaked at {peak} KiB for a chunk served as 1 GiB"
        );
        assert!(err.contains(&format!("refused entry {hash}")), "{err}");
        assert!(err.contains(&chunk), "the chunk is not named: {err}");
        assert!(
            err.contains(&format!("at most {size} bytes")),
            "the bound is not named: {err}"
        );
        // The chunk as it was: the same pull succeeds.
        std::fs::write(dir.join(&chunk), &good).unwrap();
        let (out, _) = pull_from(&dst, &url);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        dst.assert_nothing_left();
    }
    src.assert_nothing_left();
}

/// Rewrites a component's record in a cache folder with `edit` and signs the entry again
/// with `key` (a trusted key: what a careless or compromised signer publishes).
fn resign(
    cache: &Path,
    hash: &str,
    key: &Path,
    kind: ComponentKind,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let h = build_hash(hash);
    let manifest = std::fs::read(cache.join(bottle::share::entry_key(&h))).unwrap();
    let m = bottle::manifest::Manifest::parse(&manifest, "test").unwrap();
    let id = m.components.get(kind);
    let path = cache.join(bottle::share::record_key(&id));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut record);
    std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    let records: Vec<_> = m
        .components
        .ids()
        .into_iter()
        .map(|id| {
            let b = std::fs::read(cache.join(bottle::share::record_key(&id))).unwrap();
            (id, b)
        })
        .collect();
    let refs: Vec<_> = records.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    let message = bottle::share::sign::fingerprint(&h, &manifest, &refs);
    let secret =
        bottle::share::SecretKey::parse(&std::fs::read_to_string(key).unwrap(), "test").unwrap();
    std::fs::write(
        cache.join(bottle::share::signature_key(&h)),
        secret.sign(&message).to_line() + "\n",
    )
    .unwrap();
}

/// The artifact of `file` in a record's JSON.
fn artifact<'a>(record: &'a mut serde_json::Value, file: &str) -> &'a mut serde_json::Value {
    record["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["path"] == file)
        .unwrap_or_else(|| panic!("no {file} in the record"))
}

/// `bottle ARGS` through `cmd` (a [`Remote::cmd`]), which must succeed: its stdout.
fn ok_of(ctx: &TestContext, cmd: std::process::Command, args: &[&str]) -> String {
    let out = ctx.output_of(cmd, args);
    assert!(out.status.success(), "bottle {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A signed entry whose config fails its render check, then one whose record asks for a
/// setuid mode, served by `remote`: each refused, the store byte for byte as it was,
/// components included; then the entry as pushed is taken.
fn signed_bad_entries_change_nothing(remote: Remote, name: &str) {
    let src = TestContext::new(&format!("share-signed-bad-src-{name}"));
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    // The entry as pushed to a folder here: what the damaged copies are made from.
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    let pristine: std::collections::BTreeMap<_, _> = files(&cache).into_iter().collect();
    // The entry pushed by bottle to the server under `prefix`, then every object of
    // `damaged` that differs from the pushed one written over it, bypassing bottle.
    let serve = |prefix: &str, damaged: Option<&Path>| -> String {
        let url = remote.url(prefix);
        let sign = key.to_str().unwrap();
        ok_of(
            &src,
            remote.cmd(&src),
            &["push", &hash, "--to", &url, "--sign-key", sign],
        );
        if let Some(damaged) = damaged {
            let changed: Vec<_> = files(damaged)
                .into_iter()
                .filter(|(rel, bytes)| pristine.get(rel) != Some(bytes))
                .collect();
            assert!(!changed.is_empty(), "{} is not damaged", damaged.display());
            for (rel, bytes) in changed {
                remote.put(&format!("{prefix}/{rel}"), &bytes);
            }
        }
        url
    };
    // An empty store, so every component of the entry is imported.
    let dst = TestContext::new(&format!("share-signed-bad-dst-{name}"));
    dst.store().init().unwrap();
    dst.ok(&["gc"]);
    let before = dst.snapshot();
    let pull = |url: &str| {
        dst.output_of(
            remote.cmd(&dst),
            &["pull", &hash, "--json", "--from", url, "--trust", &public],
        )
    };

    // guest.json says root: a new chunk, chunk list and record for it, signed again.
    let bad_config = src.dir.path().join("bad-config");
    copy_tree(&cache, &bad_config);
    let config = m.components.get(ComponentKind::Config);
    let rendered = src.store().component_dir(&config).join("guest.json");
    let mut guest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rendered).unwrap()).unwrap();
    assert_eq!(guest["user"], "node", "{guest}");
    guest["user"] = "root".into();
    let bytes = serde_json::to_vec_pretty(&guest).unwrap();
    let digest = bottle::digest::Digest::of(&bytes);
    let chunk = bad_config.join(bottle::share::chunk_key(&digest));
    std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
    std::fs::write(&chunk, &bytes).unwrap();
    let list_path = bad_config.join(bottle::share::chunk_list_key(&config));
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&list_path).unwrap()).unwrap();
    let f = artifact(&mut list, "guest.json");
    f["chunks"] = serde_json::json!([{ "blake3": digest.hex(), "size": bytes.len() }]);
    std::fs::write(&list_path, serde_json::to_vec(&list).unwrap()).unwrap();
    resign(&bad_config, &hash, &key, ComponentKind::Config, |r| {
        let a = artifact(r, "guest.json");
        a["blake3"] = digest.hex().into();
        a["size"] = bytes.len().into();
    });
    let url = serve("bad-config", Some(&bad_config));
    let out = pull(&url);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{url}: {err}");
    assert_eq!(
        dst.snapshot(),
        before,
        "{url}: a refused pull left something (components included)"
    );
    assert!(err.contains("config/guest.json"), "{err}");
    assert!(
        err.contains("differs from what the component's key renders"),
        "{err}"
    );
    assert!(err.contains("nothing was added to the store"), "{err}");

    // A signed record asking for a setuid, world-writable image archive.
    let setuid = src.dir.path().join("setuid");
    copy_tree(&cache, &setuid);
    resign(&setuid, &hash, &key, ComponentKind::Guest, |r| {
        artifact(r, "image.tar")["mode"] = 0o4777.into();
    });
    let url = serve("setuid", Some(&setuid));
    let out = pull(&url);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{url}: {err}");
    assert!(err.contains("guest record"), "{err}");
    assert!(err.contains("image.tar"), "{err}");
    assert!(err.contains("mode 4777"), "{err}");
    assert_eq!(dst.snapshot(), before, "{url}: the store changed");

    // The cache as pushed: the same store takes the entry, every file 0644 or 0755.
    let url = serve("good", None);
    let out = pull(&url);
    assert!(out.status.success(), "{url}: {}", stderr(&out));
    assert!(dst.output(&["verify", &hash]).status.success());
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

#[test]
fn signed_entries_with_a_config_failing_its_render_check_or_a_setuid_mode_change_nothing_on_a_folder()
 {
    signed_bad_entries_change_nothing(Remote::folder(), "folder");
}

#[test]
fn signed_entries_with_a_config_failing_its_render_check_or_a_setuid_mode_change_nothing_on_nginx()
{
    signed_bad_entries_change_nothing(Remote::nginx(), "nginx");
}

#[test]
fn signed_entries_with_a_config_failing_its_render_check_or_a_setuid_mode_change_nothing_on_garage()
{
    signed_bad_entries_change_nothing(Remote::garage(), "garage");
}

/// Names planted in a cache at `team/cache` of `remote` that are none of the layout's (an
/// encoded `../` that an unescaped DELETE would take five folders up to `victim`, a `../`
/// spelled with escapes, a chunk one folder too deep, a manifest's backup): a gc removes
/// the one orphan chunk, names every planted object it can list, and changes nothing else
/// on the server, in the cache or outside it.
fn gc_leaves_names_outside_the_layout_alone(remote: &Remote, name: &str) {
    let ctx = TestContext::new(&format!("share-names-{name}"));
    let url = remote.url("team/cache");
    let hex = "ab".repeat(32);
    let planted = [
        format!("v1/chunks/00/{}victim", "%2e%2e%2f".repeat(5)),
        "v1/chunks/..%2f..%2fvictim".to_string(),
        format!("v1/chunks/ab/cd/{hex}"),
        format!("v1/entries/{hex}.json.bak"),
    ];
    // Outside the cache: at the server's root, and beside the cache.
    remote.put("victim", b"not the cache's");
    remote.put("team/victim", b"not the cache's either");
    for k in &planted {
        remote.put(&format!("team/cache/{k}"), b"planted");
    }
    // A real orphan chunk: removed.
    let orphan = format!(
        "team/cache/{}",
        bottle::share::chunk_key(&bottle::digest::Digest::of(b"orphan"))
    );
    remote.put(&orphan, b"orphan");
    let before = remote.objects();
    assert!(before.iter().any(|(k, _)| *k == orphan), "{before:?}");

    let out = ctx.output_of(remote.cmd(&ctx), &["gc", "--json", "--remote", &url]);
    let err = stderr(&out);
    assert!(out.status.success(), "{url}: {err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["removed_chunks"], 1, "{url}: {r}");
    let mut unrecognized: Vec<String> = serde_json::from_value(r["unrecognized"].clone()).unwrap();
    unrecognized.sort();
    // nginx's autoindex lists no name that starts with a `.`: there such an object is
    // neither named nor removed (the comparison of every object below still sees it).
    let mut named: Vec<_> = planted
        .into_iter()
        .filter(|k| {
            !(matches!(remote, Remote::Nginx(_)) && k.rsplit('/').next().unwrap().starts_with('.'))
        })
        .collect();
    named.sort();
    assert_eq!(unrecognized, named, "{url}: {r}");
    for k in &named {
        assert!(err.contains(k.as_str()), "{url}: {k} is not named: {err}");
    }
    // Everything but the orphan as it was, byte for byte: the planted objects and what lies
    // outside the cache included.
    let expected: Vec<_> = before.into_iter().filter(|(k, _)| *k != orphan).collect();
    assert_eq!(
        remote.objects(),
        expected,
        "{url}: gc changed what it must not"
    );
}

#[test]
fn gc_on_a_folder_leaves_a_name_outside_the_layout_alone_and_names_it() {
    gc_leaves_names_outside_the_layout_alone(&Remote::folder(), "folder");
}

#[test]
fn gc_over_nginx_leaves_a_name_outside_the_layout_alone_and_names_it() {
    gc_leaves_names_outside_the_layout_alone(&Remote::nginx(), "nginx");
}

#[test]
fn gc_over_garage_leaves_a_name_outside_the_layout_alone_and_names_it() {
    let remote = Remote::garage();
    gc_leaves_names_outside_the_layout_alone(&remote, "garage");
    // A key with a `..` part, which S3 holds as spelled: object_store refuses to list it, so
    // the gc stops, naming it, before it removes anything.
    let ctx = TestContext::new("share-names-garage-dots");
    let url = remote.url("team/cache");
    let dots = "team/cache/v1/chunks/../victim";
    remote.put(dots, b"planted");
    let orphan = format!(
        "team/cache/{}",
        bottle::share::chunk_key(&bottle::digest::Digest::of(b"another orphan"))
    );
    remote.put(&orphan, b"another orphan");
    let before = remote.objects();
    assert!(before.iter().any(|(k, _)| k == dots), "{before:?}");
    let out = ctx.output_of(remote.cmd(&ctx), &["gc", "--json", "--remote", &url]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{url}: {err}");
    assert!(err.contains(dots), "{url}: {dots} is not named: {err}");
    assert_eq!(
        remote.objects(),
        before,
        "{url}: a stopped gc changed something"
    );
}

/// The three-process interleaving on one cache: gc A holds its lease (paused), a dry run and
/// a second gc come and go, then a push: the push must not go on as if no gc ran.
fn interleave(remote: Remote, name: &str) {
    let src = TestContext::new(&format!("share-lease-src-{name}"));
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = remote.url("c");
    let url = url.as_str();
    let run = |args: &[&str]| src.output_of(remote.cmd(&src), args);
    let push_args = [
        "push",
        &hash,
        "--json",
        "--to",
        url,
        "--sign-key",
        key.to_str().unwrap(),
    ];
    ok_of(&src, remote.cmd(&src), &push_args);
    let none = "0".repeat(64);
    let mut c = remote.cmd(&src);
    c.env("BOTTLE_PAUSE_AT", "remote-gc-remove");
    let mut a = Spawned::start(c, &["gc", "--json", "--remote", url, "--keep", &none]);
    a.wait_for_stderr("paused at step", Duration::from_secs(120));
    let dry = run(&["gc", "--json", "--remote", url, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let second = run(&["gc", "--remote", url]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(stderr(&second).contains("under way"), "{}", stderr(&second));
    let pushed = run(&push_args);
    assert_eq!(
        pushed.status.code(),
        Some(1),
        "{url}: a push went on while a gc held its lease: {}",
        stderr(&pushed)
    );
    assert!(stderr(&pushed).contains("under way"), "{}", stderr(&pushed));
    a.signal(libc::SIGUSR1);
    let (code, out, err) = a.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["removed_components"], 3, "{r}");
    // Its lease is gone with it: a push now uploads the entry whole, and it pulls whole.
    let r: serde_json::Value =
        serde_json::from_str(&ok_of(&src, remote.cmd(&src), &push_args)).unwrap();
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    let dst = TestContext::new(&format!("share-lease-dst-{name}"));
    let out = dst.output_of(
        remote.cmd(&dst),
        &["pull", &hash, "--from", url, "--trust", &public],
    );
    assert!(out.status.success(), "{url}: {}", stderr(&out));
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

#[test]
fn a_gc_lease_survives_a_dry_run_and_a_second_gc_and_stops_a_push_on_a_folder() {
    interleave(Remote::folder(), "folder");
}

#[test]
fn a_gc_lease_survives_a_dry_run_and_a_second_gc_and_stops_a_push_on_nginx() {
    interleave(Remote::nginx(), "nginx");
}

#[test]
fn a_gc_lease_survives_a_dry_run_and_a_second_gc_and_stops_a_push_on_garage() {
    interleave(Remote::garage(), "garage");
}

/// A folder cache whose objects are links or FIFOs: a chunk that is a symlink to a copy of
/// itself (its bytes are right) is refused by a pull, naming the link, publishing nothing; a gc names every link and FIFO of no layout shape and follows none (what they point
/// at stays, byte for byte); and a push through a folder that links out of the cache writes
/// nothing there.
#[test]
fn a_folder_cache_follows_no_symlink_and_reads_no_fifo() {
    use std::os::unix::fs::symlink;
    let src = TestContext::new("share-links-src");
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    let outside = src.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    // Pull: a chunk made a symlink to a copy of itself outside the cache.
    let (chunk, _) = first_chunk(&cache, &m, ComponentKind::Guest);
    let copy = outside.join("chunk-copy");
    std::fs::rename(cache.join(&chunk), &copy).unwrap();
    symlink(&copy, cache.join(&chunk)).unwrap();
    let dst = TestContext::new("share-links-dst");
    let out = pull(&dst, &hash, &cache, &public);
    let err = stderr(&out);
    assert!(!out.status.success(), "a pull read through a symlink");
    assert!(err.contains("symlink") && err.contains(&chunk), "{err}");
    let published: Vec<String> = dst
        .snapshot()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.ends_with('/'))
        .filter(|p| p.contains("/entries/") || p.contains("/components/"))
        .collect();
    assert!(
        published.is_empty(),
        "a refused pull published {published:?}"
    );
    // The chunk a file again: the same pull goes through.
    std::fs::remove_file(cache.join(&chunk)).unwrap();
    std::fs::rename(&copy, cache.join(&chunk)).unwrap();
    let out = pull(&dst, &hash, &cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));

    // gc: links and a FIFO of no layout shape, named and left; their targets untouched.
    let victim = outside.join("victim");
    std::fs::write(&victim, b"not the cache's").unwrap();
    // A chunk folder name the entry's chunks left free (their names are its content's hashes),
    // other than 00, which holds the FIFO below.
    let ab = (1..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|ab| !cache.join("v1/chunks").join(ab).exists())
        .expect("a free chunk folder");
    let hex = ab.repeat(32);
    std::fs::create_dir_all(outside.join(&ab)).unwrap();
    std::fs::write(outside.join(&ab).join(&hex), b"not the cache's").unwrap();
    let planted = [
        "v1/entries/stray.json".to_string(),
        format!("v1/chunks/{ab}"),
        "v1/chunks/00/fifo".to_string(),
    ];
    symlink(&victim, cache.join(&planted[0])).unwrap();
    symlink(outside.join(&ab), cache.join(&planted[1])).unwrap();
    std::fs::create_dir_all(cache.join("v1/chunks/00")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(cache.join(&planted[2]))
        .status()
        .unwrap();
    assert!(made.success());
    let outside_before = files(&outside);
    let out = src.output(&["gc", "--json", "--remote", &url(&cache)]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut unrecognized: Vec<String> = serde_json::from_value(r["unrecognized"].clone()).unwrap();
    unrecognized.sort();
    let mut named = planted.to_vec();
    named.sort();
    assert_eq!(unrecognized, named, "{r}");
    assert_eq!(r["removed_chunks"], 0, "{r}");
    assert_eq!(files(&outside), outside_before, "gc followed a link");
    for p in &planted {
        assert!(
            std::fs::symlink_metadata(cache.join(p)).is_ok(),
            "{p} was removed"
        );
    }
    // The entry still pulls whole: nothing of it was taken for a stray.
    let ok = TestContext::new("share-links-ok");
    let out = pull(&ok, &hash, &cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));

    // Push: a chunk folder that links out of the cache; nothing is written through it.
    let fresh = src.dir.path().join("cache2");
    std::fs::create_dir_all(fresh.join("v1")).unwrap();
    let sink = outside.join("sink");
    std::fs::create_dir_all(&sink).unwrap();
    symlink(&sink, fresh.join("v1/chunks")).unwrap();
    let out = src.output(&[
        "push",
        &hash,
        "--to",
        &url(&fresh),
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a push wrote through a link");
    assert!(err.contains("symlink"), "{err}");
    assert!(
        std::fs::read_dir(&sink)
            .unwrap()
            .flatten()
            .all(|e| { std::fs::read_dir(e.path()).map_or(true, |mut d| d.next().is_none()) }),
        "a push wrote a file through the link: {:?}",
        files(&sink)
    );
    dst.assert_nothing_left();
    ok.assert_nothing_left();
    src.assert_nothing_left();
}

/// A key with a bare `..` segment, which object_store's listing cannot parse (it reads every
/// key of a page as a path): a gc over S3 stops, naming the object, and deletes nothing,
/// rather than work from a listing with holes (it could take a referenced chunk for an
/// orphan). What it lists is all or nothing; the person removes the object by hand.
#[test]
fn gc_on_garage_stops_at_a_key_it_cannot_list_naming_it_and_deletes_nothing() {
    let remote = Remote::garage();
    let ctx = TestContext::new("share-dotdot");
    let url = remote.url("team/cache");
    remote.put("team/cache/v1/chunks/../stray", b"planted");
    let orphan = format!(
        "team/cache/{}",
        bottle::share::chunk_key(&bottle::digest::Digest::of(b"orphan"))
    );
    remote.put(&orphan, b"orphan");
    let before = remote.objects();
    let out = ctx.output_of(remote.cmd(&ctx), &["gc", "--json", "--remote", &url]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("team/cache/v1/chunks/../stray"),
        "the object is not named: {err}"
    );
    assert_eq!(
        remote.objects(),
        before,
        "gc deleted from a listing it could not read"
    );
}
